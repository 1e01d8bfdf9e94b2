from __future__ import annotations

from datetime import timedelta
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class TicketingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETING_", extra="ignore")

    port: int = 8001
    payments_url: str = "http://127.0.0.1:8004"
    # The bearer token payments expects from its callers (payments' PAYMENTS_SERVICE_TOKEN).
    payments_service_token: SecretStr = SecretStr("dev-only-payments-service-token")
    payments_timeout_s: float = Field(default=5.0, gt=0)
    # Validation holds stored-value fare accounts; its VALIDATION_SERVICE_TOKEN.
    validation_url: str = "http://127.0.0.1:8002"
    validation_service_token: SecretStr = SecretStr("dev-only-validation-service-token")
    # Bearer token of the operators' back office for /v1/admin/*.
    operator_token: SecretStr = SecretStr("dev-only-ticketing-operator-token")
    # HS256 key of the riders' access tokens.
    jwt_secret: SecretStr = SecretStr("dev-only-ticketing-jwt-signing-key")
    # Argon2id cost (RFC 9106 low-memory profile); tune so that one hash takes ~0.1 s here.
    password_time_cost: int = Field(default=3, ge=1)
    password_memory_kib: int = Field(default=64 * 1024, ge=8 * 1024)
    password_parallelism: int = Field(default=4, ge=1, le=16)
    access_token_ttl: timedelta = timedelta(minutes=15)
    refresh_token_ttl: timedelta = timedelta(days=30)
    # Key-encryption key: issuer private keys are stored AES-256-GCM-wrapped under it.
    issuer_key_encryption_key: SecretStr = SecretStr("dev-only-ticketing-issuer-kek")
    # How long a phone may stay offline with one credential; bounds the key-rotation overlap.
    credential_ttl: timedelta = timedelta(days=3)
    credential_refresh_margin: timedelta = timedelta(days=1)  # re-signed when less is left
    key_retirement_interval: timedelta = timedelta(seconds=60)
    device_switch_limit: int = Field(default=3, ge=0)
    device_switch_window: timedelta = timedelta(days=30)
    # Password guessing: after this many wrong passwords for one phone number within the
    # window, logins for that number are refused (429) until the window has passed.
    login_failure_limit: int = Field(default=5, ge=1)
    login_failure_window: timedelta = timedelta(minutes=15)
    # A purchase still pending this long after its last attempt is resolved by the worker.
    purchase_retry_after: timedelta = timedelta(seconds=30)  # well beyond payments_timeout_s
    purchase_retry_max_backoff: timedelta = timedelta(minutes=5)
    # Unresolved this long (payments down all along): cancelled, and refunded if it was charged.
    purchase_abandon_after: timedelta = timedelta(hours=1)
    reconcile_interval: timedelta = timedelta(seconds=5)
    # The platform's currency (ISO 4217): a feed priced in another one is refused at import.
    currency: str = Field(default="VND", pattern=r"^[A-Z]{3}$")
    # How often each replica reads the version list (a version imported through another
    # replica is priced here after at most this long; one published ahead needs no refresh).
    network_refresh_interval: timedelta = timedelta(seconds=5)
    # An import may start this far in the past (clocks differ), not further: the minutes
    # before it were priced already by the version then in force.
    network_backdate_tolerance: timedelta = timedelta(seconds=60)

    @model_validator(mode="after")
    def _margin_inside_ttl(self) -> Self:
        if self.credential_refresh_margin >= self.credential_ttl:
            raise ValueError("credential_refresh_margin must be shorter than credential_ttl")
        return self
