"""Response models of the revenue audit: its lines, its totals and the report."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, Field

from services.parking.schemas import OverrideAction, SessionStatus, Settlement
from services.parking.tariffs import VehicleType


class AuditSessionLine(BaseModel):
    session_id: uuid.UUID
    plate: str = Field(description="Masked")
    vehicle_type: VehicleType
    entry_at: datetime
    exit_at: datetime
    status: SessionStatus
    settlement: Settlement | None
    fee: int
    repriced: int = Field(description="The fee the tariffs give today for the same times")
    paid: int = Field(description="Net money received for the session, any day")
    outstanding: int
    overridden: bool


class AuditPaymentLine(BaseModel):
    transfer_id: uuid.UUID
    kind: str
    amount: int = Field(description="Signed: a refund is negative")
    posted_at: datetime
    session_id: uuid.UUID | None
    payment_request_id: uuid.UUID | None


class AuditOverrideLine(BaseModel):
    override_id: uuid.UUID
    session_id: uuid.UUID
    action: OverrideAction
    operator: str
    reason: str
    fee_before: int | None
    fee_after: int | None
    refund_amount: int
    created_at: datetime


class AuditTotals(BaseModel):
    sessions: int
    expected: int = Field(description="Σ fee of the sessions that exited that day")
    collected: int = Field(description="Σ net money received for those sessions (any day)")
    outstanding: int = Field(description="Σ still owed by those sessions (listed)")
    overpaid: int = Field(description="Σ received beyond the fee (listed)")
    payments_observed: int = Field(
        description="Σ revenue movements of the lot that day, as parking saw them on the ledger"
    )
    payments_for_these_sessions: int
    payments_for_other_days: int = Field(description="Sessions that exited on another day")
    payments_without_session: int
    payments_reported: int | None = Field(
        description="The lot's net revenue that day by payments' journal (null: unreachable)"
    )
    ledger: int | None = Field(description="The lot's revenue postings that day by the ledger")
    unexplained: int = Field(
        description=(
            "VND no line explains: tariff mismatches without override, payments' journal vs"
            " what parking saw, journal vs ledger"
        )
    )


class AuditReport(BaseModel):
    lot_id: str
    day: date
    timezone: str
    window_start: datetime
    window_end: datetime
    totals: AuditTotals
    sessions_without_payment: list[AuditSessionLine]
    overpaid_sessions: list[AuditSessionLine]
    tariff_mismatches: list[AuditSessionLine]
    payments_without_session: list[AuditPaymentLine]
    manual_overrides: list[AuditOverrideLine]
    sessions: list[AuditSessionLine]
    problems: list[str] = Field(description="Why something could not be checked")
    ok: bool = Field(description="True when nothing is unexplained")
