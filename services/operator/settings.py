from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.events import (
    ALERTS_TOPIC,
    LEDGER_TOPIC,
    OCCUPANCY_TOPIC,
    SESSIONS_TOPIC,
    TICKETS_TOPIC,
    VALIDATIONS_TOPIC,
)
from shared.settings import ServiceSettings


def _default_metrics_urls() -> dict[str, str]:
    # The `make run` ports; docker-compose and production set OPERATOR_METRICS_URLS (JSON).
    return {
        "ticketing": "http://127.0.0.1:8001/metrics",
        "validation": "http://127.0.0.1:8002/metrics",
        "validation-fares": "http://127.0.0.1:8012/metrics",
        "parking": "http://127.0.0.1:8003/metrics",
        "payments": "http://127.0.0.1:8004/metrics",
    }


def _default_lag_groups() -> dict[str, list[str]]:
    # Groups whose topics are known, so partitions they never committed count as lag too.
    # Other groups the broker lists are shown for the partitions they committed.
    return {
        "operator": [
            TICKETS_TOPIC,
            VALIDATIONS_TOPIC,
            SESSIONS_TOPIC,
            OCCUPANCY_TOPIC,
            LEDGER_TOPIC,
            ALERTS_TOPIC,
        ],
        "validation-fares": [VALIDATIONS_TOPIC],
        "validation-topups": [LEDGER_TOPIC],
        "parking": [LEDGER_TOPIC],
    }


class OperatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="OPERATOR_", extra="ignore")

    port: int = 8080
    session_secret: SecretStr = SecretStr("dev-only-operator-session-secret")
    session_ttl: timedelta = timedelta(hours=8)  # one shift
    # EventSource cannot send headers: the page trades its bearer token for a one-time ticket.
    stream_ticket_ttl: timedelta = timedelta(seconds=30)
    # Wrong passwords: past the limit, a user name (or a client address) is refused (429) until
    # its window, opened by the first failure, closes. An address may be an office's NAT: more.
    login_failure_limit: int = Field(default=5, ge=1)
    login_client_failure_limit: int = Field(default=20, ge=1)
    login_failure_window: timedelta = timedelta(minutes=15)
    # Argon2id checks (64 MiB, ~50 ms of a core each) run in this many threads, off the event
    # loop: a flood of logins then queues for them instead of taking every core from the console.
    password_threads: int = Field(default=1, ge=1)

    # The consumer: one group reading every topic; events are deduplicated by id in Redis.
    consumer_group: str = Field(default="operator", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    # Where a group without committed offsets starts: `earliest` re-reads the retained history
    # (deduplicated), so a new or reset deployment rebuilds today's aggregates.
    consumer_start_from: Literal["earliest", "latest"] = "earliest"
    # Longer than a Hanoi day plus margin: a re-read of older records (lost offsets) finds
    # them still marked; anything older is skipped, since no aggregate shown reaches back so far.
    dedup_ttl: timedelta = timedelta(hours=26)
    tail_max_entries: int = Field(default=10_000, ge=100)  # live tail kept in Redis
    tail_scan_limit: int = Field(default=5_000, ge=100)  # entries a filtered search looks at
    summary_interval: timedelta = timedelta(milliseconds=500)  # at most 2 dashboard pushes/s
    summary_refresh: timedelta = timedelta(seconds=5)  # pushed even when nothing happened

    # Alert thresholds (rules in alerts.py).
    replay_burst_count: int = Field(default=5, ge=1)  # replayed QR rejections at one gate…
    replay_burst_window: timedelta = timedelta(seconds=60)  # …within this
    passback_count: int = Field(default=2, ge=1)  # one retry is usually a slow gate, not fraud
    passback_window: timedelta = timedelta(minutes=10)
    impossible_travel_slack: timedelta = timedelta(seconds=0)  # gates are NTP-synchronised
    gate_silent_after: timedelta = timedelta(minutes=15)  # also the dashboard's offline mark
    gate_check_interval: timedelta = timedelta(seconds=30)
    lot_full_free_spaces: int = Field(default=0, ge=0)  # "full" at or below this many free
    payment_failure_count: int = Field(default=10, ge=1)
    payment_failure_window: timedelta = timedelta(minutes=5)
    alert_cooldown: timedelta = timedelta(minutes=10)  # one alert per rule and subject

    # The network (stations, lines, distances for impossible travel): ticketing's versions,
    # polled this often (`GET /v1/network/versions`). Without it, `network_feed` (a GTFS
    # directory or zip) is the only version; with neither, places show by their code.
    ticketing_url: str | None = "http://127.0.0.1:8001"
    network_refresh: timedelta = timedelta(seconds=5)
    network_feed: Path | None = None
    currency: str = Field(default="VND", pattern=r"^[A-Z]{3}$")  # a feed in another is refused

    # What is provisioned, from its owners' public read APIs (validation `GET /v1/gates`, parking
    # `GET /v1/lots`): the dashboard lists every gate and lot, also those that never reported.
    # Events only name gates and lots that had traffic. None: not read (nothing to compare to).
    gates_url: str | None = "http://127.0.0.1:8002/v1/gates"
    lots_url: str | None = "http://127.0.0.1:8003/v1/lots"
    inventory_poll_interval: timedelta = timedelta(seconds=30)

    # Pipeline health: consumer lag from Kafka, outbox backlogs from each service's /metrics.
    pipeline_poll_interval: timedelta = timedelta(seconds=5)
    metrics_urls: dict[str, str] = Field(default_factory=_default_metrics_urls)
    lag_groups: dict[str, list[str]] = Field(default_factory=_default_lag_groups)
    scrape_timeout_s: float = Field(default=2.0, gt=0)
