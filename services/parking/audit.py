"""Revenue audit of one lot for one day (Hanoi calendar day): every dong explained.

Three views of the same money are set side by side:

1. sessions × tariff: each session that exited that day, its stored fee and the fee the dated
   tariffs give again for the same times (a difference without an operator override is
   unexplained);
2. payments: what parking recorded for each session (captures, charges, VietQR payments,
   refunds) and every revenue movement of the lot that parking saw on `payments.ledger`;
3. the ledger: payments' own journal and postings for the lot that day (its reconciliation).

Listed, and so explained: sessions without (full) payment (debts, a VietQR not yet paid),
overpaid sessions, payments without a session, payments for sessions of other days, manual
overrides. Unexplained is what none of these accounts for: a tariff mismatch without
override, a session payment missing from the ledger, payments' journal differing from what
parking saw, or the journal differing from the postings.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.parking import lots, plates, repository, session_queries
from services.parking.audit_schemas import (
    AuditOverrideLine,
    AuditPaymentLine,
    AuditReport,
    AuditSessionLine,
    AuditTotals,
)
from services.parking.payments import Payments
from services.parking.repository import Record
from services.parking.schemas import OverrideAction, SessionStatus, Settlement
from services.parking.session_state import Override, PaymentSeen, SessionState
from services.parking.tariffs import HANOI_TZ, Tariff, TariffError, VehicleType, price_session
from shared.payments_client import PaymentsRefused, PaymentsUnavailable


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=HANOI_TZ)
    return start, start + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RevenueReported:
    net_amount: int
    ledger_amount: int


@dataclass(frozen=True, slots=True)
class DayFacts:
    lot_id: str
    day: date
    sessions: Sequence[SessionState]
    session_payments: Sequence[PaymentSeen]  # every payment of those sessions, any day
    payments_that_day: Sequence[PaymentSeen]  # parking's records of payments posted that day
    observed: Sequence[Record]  # the lot's revenue movements seen on the ledger that day
    linked: dict[uuid.UUID, uuid.UUID]  # observed transfer → session, when parking knows it
    overridden: frozenset[uuid.UUID]
    overrides: Sequence[Override]
    tariffs: Sequence[Tariff]
    reported: RevenueReported | None
    problems: Sequence[str]


def _repriced(row: SessionState, tariffs: Sequence[Tariff]) -> int:
    try:
        return price_session(
            row.entry_at, row.left_at, VehicleType(row.vehicle_type), tariffs, lot_id=row.lot_id
        ).total
    except TariffError:
        return -1


def _session_line(
    row: SessionState, paid: int, repriced: int, overridden: bool
) -> AuditSessionLine:
    fee = int(row.fee) if row.fee is not None else repriced
    return AuditSessionLine(
        session_id=row.session_id,
        plate=plates.normalise(row.plate).masked(),
        vehicle_type=VehicleType(row.vehicle_type),
        entry_at=row.entry_at.astimezone(HANOI_TZ),
        exit_at=row.left_at.astimezone(HANOI_TZ),
        status=SessionStatus(row.status),
        settlement=Settlement(row.settlement) if row.settlement else None,
        fee=fee,
        repriced=repriced,
        paid=paid,
        outstanding=max(fee - paid, 0),
        overridden=overridden,
    )


def build_report(facts: DayFacts) -> AuditReport:
    since, until = day_window(facts.day)
    paid_by_session: dict[uuid.UUID, int] = {}
    for payment in facts.session_payments:
        paid_by_session[payment.session_id] = (
            paid_by_session.get(payment.session_id, 0) + payment.amount
        )
    lines = [
        _session_line(
            row,
            paid_by_session.get(row.session_id, 0),
            _repriced(row, facts.tariffs),
            row.session_id in facts.overridden,
        )
        for row in facts.sessions
    ]
    mismatches = [line for line in lines if line.fee != line.repriced and not line.overridden]
    unexplained = sum(abs(line.fee - line.repriced) for line in mismatches)

    these = {row.session_id for row in facts.sessions}
    observed_ids = {row.transfer_id for row in facts.observed}
    for payment in facts.payments_that_day:  # parking recorded it, the ledger never showed it
        if payment.transfer_id not in observed_ids:
            unexplained += abs(payment.amount)
    for_these = for_others = without = 0
    orphans: list[AuditPaymentLine] = []
    for movement in facts.observed:
        owner = facts.linked.get(movement.transfer_id)
        if owner is None:
            without += movement.amount
            orphans.append(
                AuditPaymentLine(
                    transfer_id=movement.transfer_id,
                    kind=movement.kind,
                    amount=movement.amount,
                    posted_at=movement.posted_at.astimezone(HANOI_TZ),
                    session_id=None,
                    payment_request_id=movement.payment_request_id,
                )
            )
        elif owner in these:
            for_these += movement.amount
        else:
            for_others += movement.amount
    observed_total = for_these + for_others + without
    problems = list(facts.problems)
    if facts.reported is not None:
        unexplained += abs(facts.reported.net_amount - observed_total)
        unexplained += abs(facts.reported.ledger_amount - facts.reported.net_amount)
        if facts.reported.net_amount != observed_total:
            problems.append(
                f"payments' journal shows {facts.reported.net_amount} VND for the lot, parking"
                f" saw {observed_total} VND on the ledger (events not consumed yet?)"
            )
        if facts.reported.ledger_amount != facts.reported.net_amount:
            problems.append(
                f"payments' postings ({facts.reported.ledger_amount} VND) differ from its"
                f" journal ({facts.reported.net_amount} VND)"
            )
    expected = sum(line.fee for line in lines)
    collected = sum(line.paid for line in lines)
    totals = AuditTotals(
        sessions=len(lines),
        expected=expected,
        collected=collected,
        outstanding=sum(line.outstanding for line in lines),
        overpaid=sum(max(line.paid - line.fee, 0) for line in lines),
        payments_observed=observed_total,
        payments_for_these_sessions=for_these,
        payments_for_other_days=for_others,
        payments_without_session=without,
        payments_reported=facts.reported.net_amount if facts.reported else None,
        ledger=facts.reported.ledger_amount if facts.reported else None,
        unexplained=unexplained,
    )
    return AuditReport(
        lot_id=facts.lot_id,
        day=facts.day,
        timezone="Asia/Ho_Chi_Minh",
        window_start=since,
        window_end=until,
        totals=totals,
        sessions_without_payment=[line for line in lines if line.outstanding > 0],
        overpaid_sessions=[line for line in lines if line.paid > line.fee],
        tariff_mismatches=mismatches,
        payments_without_session=orphans,
        manual_overrides=[
            AuditOverrideLine(
                override_id=row.override_id,
                session_id=row.session_id,
                action=OverrideAction(row.action),
                operator=row.operator,
                reason=row.reason,
                fee_before=row.fee_before,
                fee_after=row.fee_after,
                refund_amount=row.refund_amount,
                created_at=row.created_at.astimezone(HANOI_TZ),
            )
            for row in facts.overrides
        ],
        sessions=lines,
        problems=problems,
        ok=unexplained == 0 and not facts.problems,
    )


async def _reported(
    payments: Payments, lot_id: str, day: date
) -> tuple[RevenueReported | None, str | None]:
    try:
        report = await payments.reconciliation(day)
    except (PaymentsUnavailable, PaymentsRefused) as error:
        return None, f"payments' reconciliation is unavailable: {error}"
    for line in report.get("revenue", []):
        if line.get("source") == "parking" and line.get("lot_id") == lot_id:
            return RevenueReported(int(line["net_amount"]), int(line["ledger_amount"])), None
    return RevenueReported(0, 0), None


async def gather(session: AsyncSession, payments: Payments, lot_id: str, day: date) -> DayFacts:
    """Read the day's facts; the transaction must begin with a consistent snapshot."""
    await repository.use_consistent_snapshot(session)
    await lots.require_lot(session, lot_id)
    since, until = day_window(day)
    sessions = await session_queries.sessions_exited_between(session, lot_id, since, until)
    session_ids = [row.session_id for row in sessions]
    observed = await session_queries.ledger_transfers_between(session, lot_id, since, until)
    known = await session_queries.payments_by_transfer(
        session, [row.transfer_id for row in observed]
    )
    linked = {row.transfer_id: row.session_id for row in known}
    by_request = await session_queries.sessions_of_requests(
        session,
        [row.payment_request_id for row in observed if row.payment_request_id is not None],
    )
    request_owner = {row.payment_request_id: row.session_id for row in by_request}
    for row in observed:
        if row.transfer_id not in linked and row.payment_request_id in request_owner:
            linked[row.transfer_id] = request_owner[row.payment_request_id]
    overrides = await session_queries.overrides_between(session, lot_id, since, until)
    of_sessions = await session_queries.overrides_of_sessions(session, session_ids)
    tariffs: list[Tariff] = []
    for vehicle_type in VehicleType:
        tariffs += await lots.tariffs_for(session, lot_id, vehicle_type)
    reported, problem = await _reported(payments, lot_id, day)
    return DayFacts(
        lot_id=lot_id,
        day=day,
        sessions=sessions,
        session_payments=await session_queries.payments_of_sessions(session, session_ids),
        payments_that_day=await session_queries.session_payments_between(
            session, lot_id, since, until
        ),
        observed=observed,
        linked=linked,
        overridden=frozenset(row.session_id for row in of_sessions),
        overrides=overrides,
        tariffs=tariffs,
        reported=reported,
        problems=[problem] if problem else [],
    )


CSV_COLUMNS = (
    "section",
    "id",
    "session_id",
    "plate",
    "vehicle_type",
    "entry_at",
    "exit_at",
    "status",
    "settlement",
    "fee",
    "repriced",
    "paid",
    "outstanding",
    "amount",
    "kind",
    "at",
    "operator",
    "detail",
)


def _rows(report: AuditReport) -> Iterable[dict[str, Any]]:
    for name, value in report.totals.model_dump().items():
        yield {"section": "total", "id": name, "amount": value}
    sections: tuple[tuple[str, list[AuditSessionLine]], ...] = (
        ("session", report.sessions),
        ("session_without_payment", report.sessions_without_payment),
        ("overpaid_session", report.overpaid_sessions),
        ("tariff_mismatch", report.tariff_mismatches),
    )
    for section, lines in sections:
        for line in lines:
            yield {
                "section": section,
                "id": line.session_id,
                "session_id": line.session_id,
                "plate": line.plate,
                "vehicle_type": line.vehicle_type.value,
                "entry_at": line.entry_at.isoformat(),
                "exit_at": line.exit_at.isoformat(),
                "status": line.status.value,
                "settlement": line.settlement.value if line.settlement else "",
                "fee": line.fee,
                "repriced": line.repriced,
                "paid": line.paid,
                "outstanding": line.outstanding,
            }
    for payment in report.payments_without_session:
        yield {
            "section": "payment_without_session",
            "id": payment.transfer_id,
            "amount": payment.amount,
            "kind": payment.kind,
            "at": payment.posted_at.isoformat(),
            "detail": f"payment request {payment.payment_request_id}"
            if payment.payment_request_id
            else "",
        }
    for override in report.manual_overrides:
        yield {
            "section": "manual_override",
            "id": override.override_id,
            "session_id": override.session_id,
            "fee": override.fee_after,
            "amount": override.refund_amount,
            "kind": override.action.value,
            "at": override.created_at.isoformat(),
            "operator": override.operator,
            "detail": f"fee {override.fee_before} -> {override.fee_after}: {override.reason}",
        }
    for problem in report.problems:
        yield {"section": "problem", "detail": problem}


def to_csv(report: AuditReport) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in _rows(report):
        writer.writerow({column: row.get(column, "") for column in CSV_COLUMNS})
    return buffer.getvalue()
