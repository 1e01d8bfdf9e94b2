from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from shared.fields import Text


class Role(StrEnum):
    viewer = "viewer"
    admin = "admin"


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")
    password: Text = Field(min_length=1, max_length=256)


class SessionRead(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires")
    role: Role


class OperatorRead(BaseModel):
    username: str
    role: Role


class StreamTicketRead(BaseModel):
    ticket: str = Field(description="Pass as `?ticket=` to `GET /v1/stream`; valid once")
    expires_in: int = Field(description="Seconds the ticket can still be used")


class MinuteCount(BaseModel):
    accepted: int = 0
    rejected: int = 0


class StationRead(BaseModel):
    place: str = Field(description="Station code (`2A-01`) or `bus:<route>`")
    name: str
    line: str | None = Field(description="Metro line, or null for a bus route")
    per_minute: list[MinuteCount] = Field(description="Aligned with `DashboardRead.minutes`")
    today: MinuteCount


class ReasonSeries(BaseModel):
    reason: str
    counts: list[int] = Field(description="Aligned with `DashboardRead.reason_buckets`")
    today: int


class HourRevenue(BaseModel):
    hour: datetime
    transit: int
    parking: int


class TodayRead(BaseModel):
    day: str = Field(description="The Hanoi calendar day (UTC+7)")
    accepted: int
    rejected: int
    revenue_transit: int = Field(description="VND: fares and ticket sales, net of refunds")
    revenue_parking: int = Field(description="VND: parking fees, net of refunds")
    revenue_by_lot: dict[str, int]
    revenue_by_hour: list[HourRevenue]
    tickets_issued: int
    payment_failures: int
    topups: int = Field(description="VND topped up into wallets")
    suspense: int = Field(description="VND that landed in the suspense account")
    alerts: int


class GateState(StrEnum):
    online = "online"  # a decision within `OPERATOR_GATE_SILENT_AFTER`
    silent = "silent"  # decisions before, none within it
    never_reported = "never_reported"  # provisioned, no decision received by the console
    disabled = "disabled"  # provisioned and disabled: its silence is expected


class GateStatusRead(BaseModel):
    gate_id: str
    station: str | None
    line: str | None
    route: str | None
    state: GateState
    provisioned: bool = Field(
        description="In validation's list of gates; false for a gate that reported but is not "
        "listed (removed, or the list could not be read)"
    )
    last_seen: datetime | None = Field(description="Its latest decision; null: none received")
    online: bool = Field(description="`state` is `online`")
    last_decision: str | None
    last_reason: str | None


class GateSummaryRead(BaseModel):
    """What the gate figures count. `online + silent + never_reported + disabled` is every gate
    shown: the provisioned ones and any that reported without being provisioned."""

    provisioned: int | None = Field(description="Gates validation lists; null: list not read")
    online: int
    silent: int
    never_reported: int
    disabled: int
    not_provisioned: int = Field(description="Gates that reported but validation does not list")
    listed_at: datetime | None = Field(description="When validation's list was last read")
    list_error: str | None = Field(description="Why the latest read of the list failed")


class LotRead(BaseModel):
    lot_id: str
    name: str | None = Field(description="From parking's list of lots")
    vehicle_type: str
    capacity: int
    occupied: int | None = Field(description="Null: no occupancy event received for it yet")
    free: int | None
    updated_at: datetime | None = Field(description="Time of its latest occupancy event")
    provisioned: bool = Field(description="In parking's list of lots")


class LotSummaryRead(BaseModel):
    provisioned: int | None = Field(description="Lots parking lists; null: list not read")
    listed_at: datetime | None
    list_error: str | None


class DashboardRead(BaseModel):
    generated_at: datetime
    minutes: list[datetime] = Field(description="Start of each minute, oldest first")
    network: list[MinuteCount]
    stations: list[StationRead]
    reason_buckets: list[datetime] = Field(description="Start of each 10-minute bucket")
    reasons: list[ReasonSeries]
    today: TodayRead
    gates: list[GateStatusRead] = Field(
        description="Every provisioned gate and every gate that reported, by id"
    )
    gate_summary: GateSummaryRead
    lots: list[LotRead] = Field(
        description="Every provisioned lot (per vehicle type it has places for) and every lot "
        "with occupancy events"
    )
    lot_summary: LotSummaryRead
    open_alerts: int


class AlertRead(BaseModel):
    alert_id: str
    rule: str = Field(
        description="replay_burst, impossible_travel, passback, gate_silent, lot_full, "
        "payment_failures, suspense, offline_double_use, or external"
    )
    severity: str
    subject: str
    detail: str = Field(description="English; the console localises `rule` and `params`")
    params: dict[str, Any]
    gate_id: str | None = None
    station: str | None = None
    ticket_id: str | None = None
    lot_id: str | None = None
    raised_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None


class AlertStatus(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    all = "all"


class TailEntryRead(BaseModel):
    stream_id: str = Field(description="Position in the live tail (use as `before` to page)")
    id: str = Field(description="The event id")
    type: str
    category: str
    at: datetime
    ticket_id: str | None = None
    gate_id: str | None = None
    station: str | None = None
    line: str | None = None
    route: str | None = None
    plate: str | None = Field(default=None, description="Masked by parking (`29A-***.45`)")
    lot_id: str | None = None
    decision: str | None = None
    reason: str | None = None
    amount: int | None = None
    kind: str | None = None
    source: str | None = None
    vehicle_type: str | None = None
    free: int | None = None
    capacity: int | None = None
    severity: str | None = None
    session_id: str | None = None
    product: str | None = None
    action: str | None = None
    fare: int | None = None
    offline: bool | None = None
    alert_id: str | None = None
    acknowledged_by: str | None = None
    alert: AlertRead | None = None


class PartitionLagRead(BaseModel):
    group: str
    topic: str
    partition: int
    committed: int | None = Field(description="Next offset the group will read; null: none")
    end: int
    lag: int = Field(description="Records not yet processed by the group")
    lag_seconds: float = Field(description="Age of the oldest unprocessed record")


class GroupLagRead(BaseModel):
    group: str
    lag: int
    lag_seconds: float
    partitions: int


class ServiceHealthRead(BaseModel):
    service: str
    url: str
    up: bool
    error: str | None = None
    outbox_backlog: float | None = Field(default=None, description="Events not yet relayed")
    outbox_oldest_age_seconds: float | None = None
    dead_letters: float | None = Field(default=None, description="Records this service parked")


class PipelineRead(BaseModel):
    checked_at: datetime | None = Field(description="Null until the first check has run")
    kafka_error: str | None = None
    groups: list[GroupLagRead]
    partitions: list[PartitionLagRead]
    services: list[ServiceHealthRead]
    dead_letter_records: int | None = Field(
        default=None, description="Records on `ops.deadletter` (still retained)"
    )
