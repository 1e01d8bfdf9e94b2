from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ParkingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PARKING_", extra="ignore")

    port: int = 8003
    payments_url: str = "http://127.0.0.1:8004"
    # = PAYMENTS_SERVICE_TOKEN: parking calls payments as a CityPass service.
    payments_service_token: SecretStr = SecretStr("dev-only-payments-service-token")
    # A lane waits for payments at most this long before falling back (see fallback_enabled).
    payments_timeout_s: float = Field(default=2.0, gt=0)
    # Bearer token of operators and back offices: lots, lanes, devices, tariffs, vehicles,
    # overrides, disputes, audit.
    admin_token: SecretStr = SecretStr("dev-only-parking-admin-token")
    # Keys the receipt tokens, receipt codes and account QRs parking hands out (HMAC, one key
    # per purpose derived from it).
    token_secret: SecretStr = SecretStr("dev-only-parking-token-secret")

    # Plate reads below this camera confidence open the barrier but flag the session.
    review_confidence: float = Field(default=0.85, ge=0, le=1)
    # Device clocks run a little ahead; anything later than now + this is refused.
    max_clock_skew: timedelta = timedelta(seconds=5)
    # Offline lanes upload their events late, but not later than this.
    max_event_age: timedelta = timedelta(days=7)
    # A registered vehicle's wallet hold lasts this long (payments allows up to 2 days);
    # a longer stay is charged directly at exit.
    hold_ttl: timedelta = timedelta(days=2)
    # Held at entry when the tariff in force has no daily cap.
    hold_without_cap: int = Field(default=200_000, gt=0)

    # Lane offline or bank slow: let the vehicle out and bill the plate later (never cash).
    fallback_enabled: bool = True
    # How long a lane shows the VietQR before it may let the vehicle out on the fallback.
    payment_wait: timedelta = timedelta(seconds=90)
    # How often unpaid debts are retried (wallet charge, or a VietQR for the receipt).
    debt_retry_interval: timedelta = timedelta(seconds=30)
    # A second exit read of a plate this soon after its last exit is a double exit.
    double_exit_window: timedelta = timedelta(hours=1)
    # Receipts found by plate + receipt code (GET /v1/receipts): lookups per client address
    # and period. A driver mistypes a code a few times; a guesser of 50-bit codes gets nowhere.
    receipt_lookups_per_client: int = Field(default=10, ge=1)
    receipt_lookup_period: timedelta = timedelta(minutes=10)
    # How far back a code finds receipts (the receipt token shown at exit never expires).
    receipt_lookup_horizon: timedelta = timedelta(days=90)
    # Lane decisions in progress at once; the next lane gets 503 `overloaded` + Retry-After
    # at once rather than queueing behind a saturated process.
    max_decisions_in_flight: int = Field(default=48, ge=1)
    # Lots, lanes and devices are cached in memory this long (revocations take effect after).
    cache_ttl: timedelta = timedelta(seconds=10)
