from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class OperatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="OPERATOR_", extra="ignore")

    port: int = 8080
    session_secret: SecretStr = SecretStr("dev-only-operator-session-secret")
    session_ttl: timedelta = timedelta(hours=8)  # one shift
