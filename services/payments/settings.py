from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    port: int = 8004
    # Bearer token of the callers of /v1/* (ticketing, parking, the rider app's backend).
    service_token: SecretStr = SecretStr("dev-only-payments-service-token")
    # Shared with the bank: it signs every notification with HMAC-SHA256.
    bank_webhook_secret: SecretStr = SecretStr("dev-only-bank-webhook-secret")
    bank_webhook_window: timedelta = timedelta(seconds=300)  # clocks and retries of the bank
    # Where riders transfer money: printed in every VietQR (Vietcombank BIN by default).
    bank_bin: str = Field(default="970436", pattern=r"^[0-9]{6}$")
    collection_account: str = Field(default="0011004242424", pattern=r"^[A-Za-z0-9]{1,19}$")
    merchant_name: str = Field(default="CITYPASS HANOI", max_length=25)
    merchant_city: str = Field(default="HA NOI", max_length=15)
    # Each hot system account (revenue, holds) is spread over this many rows: a charge holds
    # its row until its commit is flushed, so 16 concurrent callers on 8 rows queued behind
    # each other's fsync.
    hot_account_shards: int = Field(default=32, ge=1, le=64)
    hold_ttl: timedelta = timedelta(minutes=30)  # a parking session's pre-authorisation
    hold_max_ttl: timedelta = timedelta(days=2)  # overnight parking
    hold_expiry_interval: timedelta = timedelta(seconds=5)  # how often expired holds are voided
