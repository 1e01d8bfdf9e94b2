"""A parking session as the rules read it: one typed, immutable value per row of `sessions`.

The repository layer (session_queries.py, lane_sql.py) builds it from what PostgreSQL returns;
the rules never change it in place: `UnitOfWork.update_session` makes the next state and
writes the change.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import RowMapping


class SessionState(NamedTuple):
    """Immutable: a change is a new state (`_replace`). A NamedTuple rather than a frozen
    dataclass: every lane exit builds one and replaces it, ~4 µs of CPU as a NamedTuple and
    ~20-27 µs as a frozen dataclass of 39 fields (one setattr each); SimpleNamespace was ~3."""

    session_id: uuid.UUID
    lot_id: str
    status: str
    vehicle_type: str
    plate_key: str
    plate: str
    entry_method: str
    entry_lane_id: str
    entry_device_id: str | None
    entry_at: datetime
    entry_recorded_at: datetime
    entry_confidence: float | None
    entry_image_ref: str | None
    vehicle_id: uuid.UUID | None
    wallet_account_id: uuid.UUID | None
    hold_id: uuid.UUID | None
    hold_amount: int | None
    hold_status: str | None
    review_reasons: list[str]
    exit_lane_id: str | None
    exit_device_id: str | None
    exit_at: datetime | None
    exit_recorded_at: datetime | None
    exit_confidence: float | None
    exit_image_ref: str | None
    exit_offline: bool
    fee: int | None
    priced: dict[str, Any] | None
    settlement: str | None
    paid_amount: int
    debt_status: str | None
    debt_next_attempt_at: datetime | None
    payment_request_id: uuid.UUID | None
    payment_reference: str | None
    payment_qr: str | None
    payment_amount: int | None
    payment_requested_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, row: Mapping[str, Any] | RowMapping) -> SessionState:
        """From a row of `sessions` (an asyncpg Record or a SQLAlchemy row's mapping)."""
        values = [row[name] for name in SESSION_FIELDS]
        if isinstance(values[_PRICED], str):  # a plain asyncpg connection gives JSON as text
            values[_PRICED] = orjson.loads(values[_PRICED])
        return cls._make(values)

    @property
    def left_at(self) -> datetime:
        """The exit time of a session that has one (at the barrier or closed)."""
        assert self.exit_at is not None, f"session {self.session_id} has no exit"
        return self.exit_at

    @property
    def priced_fee(self) -> int:
        """The fee of a session that was priced (every session past its exit read)."""
        assert self.fee is not None, f"session {self.session_id} is not priced"
        return self.fee

    @property
    def qr_shown_at(self) -> datetime:
        """When the VietQR of a session waiting at the barrier was first shown."""
        assert self.payment_requested_at is not None, f"session {self.session_id} has no VietQR"
        return self.payment_requested_at

    @property
    def wallet(self) -> uuid.UUID:
        """The vehicle wallet of a registered session."""
        assert self.wallet_account_id is not None, f"session {self.session_id} has no wallet"
        return self.wallet_account_id


SESSION_FIELDS = SessionState._fields
_PRICED = SESSION_FIELDS.index("priced")


# What hangs on a session: the money seen for it, operators' overrides, drivers' disputes.


@dataclass(frozen=True, slots=True)
class PaymentSeen:
    """A row of `session_payments`: money moved for a session, once per transfer."""

    transfer_id: uuid.UUID
    session_id: uuid.UUID
    lot_id: str
    kind: str  # capture, charge, vietqr or refund
    amount: int  # signed: refunds are negative
    reference: str | None
    posted_at: datetime


@dataclass(frozen=True, slots=True)
class Override:
    override_id: uuid.UUID
    session_id: uuid.UUID
    lot_id: str
    action: str
    operator: str
    reason: str
    fee_before: int | None
    fee_after: int | None
    refund_amount: int
    refund_status: str | None
    details: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Dispute:
    dispute_id: uuid.UUID
    session_id: uuid.UUID
    status: str
    reason: str
    detail: str
    claimed_entry_at: datetime | None
    claimed_exit_at: datetime | None
    created_at: datetime
    resolved_at: datetime | None
    resolution_note: str | None
    override_id: uuid.UUID | None
