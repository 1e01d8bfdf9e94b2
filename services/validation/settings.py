from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.validation.memory import decode_private_key
from shared.settings import Environment, ServiceSettings


class IssuerKeyConfig(BaseModel):
    """An issuer public key given in configuration (`VALIDATION_ISSUER_KEYS`, a JSON list)."""

    kid: str = Field(min_length=1, max_length=32)
    public_key: str = Field(description="Raw 32-byte Ed25519 key, base64 (URL-safe or not)")
    not_after: int | None = Field(default=None, description="Unix seconds; refused after it")


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ValidationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VALIDATION_", extra="ignore")

    port: int = 8002
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)  # 1,000 offline decisions fit
    # Operators provision gates and load issuer keys with `Authorization: Bearer <admin token>`.
    admin_token: SecretStr = SecretStr("dev-only-validation-admin-token")
    # CityPass services (ticketing, for a rider's fares) call with this bearer token.
    service_token: SecretStr = SecretStr("dev-only-validation-service-token")
    # After `POST /v1/gates/{id}/secret:rotate` the old secret still signs for this long: time
    # to load the new one into the gate without closing it. 0 cuts the old one off at once.
    gate_secret_grace: timedelta = Field(default=timedelta(minutes=10), ge=timedelta(0))

    # Dynamic QR: phones sign every 10 s; their clocks drift up to ~5 s.
    qr_window: timedelta = timedelta(seconds=30)
    qr_skew: timedelta = timedelta(seconds=5)
    device_window: timedelta = timedelta(seconds=60)  # gate request timestamps
    # A gate's scan time this far in the past is trusted (a request queued on a slow link).
    scan_lag: timedelta = timedelta(seconds=60)
    # Validation processes and Redis agree on the time within this (NTP keeps it to ms); the
    # one-time-use markers of QRs outlive every tolerance by this much (services/.../timing.py).
    clock_tolerance: timedelta = timedelta(seconds=30)
    # A trip open longer than this closes at the line's maximum fare (line 2A end to end ≈ 25 min).
    max_trip: timedelta = timedelta(hours=3)
    trip_sweep_interval: timedelta = timedelta(seconds=5)
    # Two taps of one ticket on the same bus route within this are one boarding (anti-passback).
    bus_passback: timedelta = timedelta(minutes=5)

    # Issuer keys: polled from ticketing, plus any configured here or loaded by an operator.
    ticketing_url: str | None = "http://127.0.0.1:8001"
    keys_refresh: timedelta = timedelta(seconds=60)
    issuer_keys: list[IssuerKeyConfig] = Field(default_factory=list)
    # The network and its fares: ticketing's versions (`ticketing_url`), polled this often; a
    # version published ahead applies at its start without a poll. Without `ticketing_url`
    # (tests, a lab gate) this feed (a GTFS directory or zip) is the only version, in force
    # since the epoch. With neither, decisions answer 503 `network_not_loaded`.
    network_refresh: timedelta = timedelta(seconds=5)
    network_feed: Path | None = None
    currency: str = Field(default="VND", pattern=r"^[A-Z]{3}$")  # a feed in another is refused
    # How often in-memory gates, keys, products and the deny list are re-read from Redis.
    state_refresh: timedelta = timedelta(seconds=1)
    credential_cache_size: int = Field(default=200_000, ge=1)  # verified issuer signatures

    # Fares of stored-value riders are charged through payments, never on the gate's path.
    # The fare worker (fares, top-ups, the trip sweeper) runs in every process by default (one
    # process does everything); `make run` and docker-compose turn it off in the gates' process
    # and run it in its own (validation-fares), so its work never competes with a gate request.
    run_fare_worker: bool = True
    payments_url: str = "http://127.0.0.1:8004"
    payments_token: SecretStr = SecretStr("dev-only-payments-service-token")
    payments_timeout_s: float = Field(default=5.0, gt=0)

    # Offline gate bundles: signed with this Ed25519 key (raw 32 bytes, base64). When unset,
    # development and test share one generated key through Redis; production must set it.
    bundle_signing_key: SecretStr | None = None
    bundle_ttl: timedelta = timedelta(hours=6)
    # Offline decisions are reconciled until their QR is this old; a QR's used-marker lives as
    # long (about 150 bytes of Redis per validation: 1.3 M a day in Hanoi ≈ 0.4 GB for 2 days).
    offline_upload_horizon: timedelta = timedelta(days=2)

    # Every event waits in a Redis stream (written by the decision itself) until Kafka has it.
    relay_batch_size: int = Field(default=500, ge=1)
    relay_retry_interval: timedelta = timedelta(seconds=1)
    # Another process's events unacknowledged this long are taken over (that process died).
    relay_claim_after: timedelta = timedelta(seconds=30)
    # A gates' process beside a relaying one (validation-fares) stands by: it relays only while
    # events wait longer than relay_claim_after, so relaying never takes a gate's CPU (`make
    # bench` at 1,000/s: server p99 7.2 ms relaying, 4.3 ms standing by).
    relay_standby: bool = False

    # Each process reads every deny-list event itself, in a consumer group of its own.
    instance_id: str = Field(default_factory=_instance_id, pattern=r"^[A-Za-z0-9_.-]{1,100}$")

    @model_validator(mode="after")
    def _horizons(self) -> Self:
        if self.offline_upload_horizon < self.bundle_ttl + self.qr_window:
            raise ValueError(
                "offline_upload_horizon must be at least bundle_ttl + qr_window: a gate that"
                " decides offline until its bundle expires must still be able to upload"
            )
        return self

    @model_validator(mode="after")
    def _bundle_key(self) -> Self:
        if self.bundle_signing_key is None:
            if self.environment is Environment.production:
                raise ValueError("bundle_signing_key must be set in production")
            return self
        try:  # at start-up, not at the first gate that asks for a bundle
            decode_private_key(self.bundle_signing_key.get_secret_value())
        except ValueError as exc:
            raise ValueError(
                "bundle_signing_key must be a raw 32-byte Ed25519 key in base64"
                " (e.g. `openssl rand -base64 32`)"
            ) from exc
        return self
