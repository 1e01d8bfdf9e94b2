"""The settings base every service extends: one class per service, with its own env prefix."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_MARKERS = ("change-me", "changeme", "dev-only", "placeholder", "secret")


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class ServiceSettings(BaseSettings):
    """Shared fields; each service subclass sets its own `env_prefix`."""

    model_config = SettingsConfigDict(env_prefix="CITYPASS_", extra="ignore")

    environment: Environment = Environment.development
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:25432/citypass"
    redis_url: str = "redis://127.0.0.1:26379/0"
    kafka_bootstrap_servers: str = "127.0.0.1:29092"
    # Tansu (local) has no idempotent producer; turn this on against real Kafka.
    kafka_idempotent_producer: bool = False
    kafka_send_timeout_s: float = Field(default=5.0, gt=0)
    dependency_timeout_s: float = Field(default=2.0, gt=0)  # each /readyz probe
    # Request bodies above this are refused (413) before they are read: a JSON command is
    # under 4 KiB; validation raises it for offline gates' batches.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        if self.environment is not Environment.production:
            return self
        for name, value in self:
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                if len(secret) < 16 or any(m in secret.lower() for m in PLACEHOLDER_MARKERS):
                    raise ValueError(f"{name} holds a placeholder secret; set a real one")
        return self
