from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ParkingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PARKING_", extra="ignore")

    port: int = 8003
    payments_url: str = "http://127.0.0.1:8004"
