"""Daily reconciliation: ledger vs bank notifications vs the charges journal. Pure logic.

A day is a calendar day in Hanoi (UTC+7, no daylight saving). The report totals what the bank
notified, what the ledger moved through bank clearing and revenue, and lists every mismatch
with its cause. A VietQR that was requested and never paid is reported but is not a mismatch:
riders abandon top-ups all the time.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from services.payments.schemas import (
    BankTotals,
    Mismatch,
    MismatchCause,
    ReconciliationReport,
    RevenueLine,
    Source,
)

HANOI = timezone(timedelta(hours=7), "Asia/Ho_Chi_Minh")
CSV_COLUMNS = ("record", "area", "subject", "cause", "expected", "actual", "detail")


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=HANOI)
    return start, start + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class NotificationLine:
    bank_transaction_id: str
    amount: int
    reference: str | None
    outcome: str
    cause: str | None
    expected_amount: int | None
    transfer_amount: int | None


@dataclass(frozen=True, slots=True)
class PaidRequestLine:
    payment_request_id: uuid.UUID
    reference: str
    amount: int


@dataclass(frozen=True, slots=True)
class JournalLine:
    source: str
    lot_id: str | None
    kind: str
    count: int
    amount: int


@dataclass(frozen=True, slots=True)
class LedgerRevenueLine:
    account_kind: str
    owner_id: str | None
    amount: int


@dataclass(frozen=True, slots=True)
class UnbalancedLine:
    transfer_id: uuid.UUID
    legs: int
    postings_total: int


@dataclass(frozen=True, slots=True)
class DayFacts:
    """Everything the report is computed from, read in one snapshot."""

    notifications: list[NotificationLine]
    clearing_amount: int
    paid_without_notification: list[PaidRequestLine]
    unpaid_requests: int
    unpaid_amount: int
    journal: list[JournalLine]
    ledger_revenue: list[LedgerRevenueLine]
    unbalanced: list[UnbalancedLine]


def _bank_mismatches(facts: DayFacts) -> Iterable[Mismatch]:
    for line in facts.notifications:
        subject = f"bank transaction {line.bank_transaction_id}"
        if line.outcome == "suspense" and line.cause is not None:
            yield Mismatch(
                area="bank",
                subject=subject,
                cause=MismatchCause(line.cause),
                expected=line.expected_amount,
                actual=line.amount,
                detail=f"{line.amount} VND for reference {line.reference or '(none)'}"
                " is in the suspense account",
            )
        if line.transfer_amount != line.amount:
            yield Mismatch(
                area="bank",
                subject=subject,
                cause=MismatchCause.notification_not_in_ledger,
                expected=line.amount,
                actual=line.transfer_amount,
                detail="the ledger transfer of this notification is missing or differs",
            )
    notified = sum(line.amount for line in facts.notifications)
    if facts.clearing_amount != notified:
        yield Mismatch(
            area="bank",
            subject="bank clearing",
            cause=MismatchCause.clearing_differs_from_notifications,
            expected=notified,
            actual=facts.clearing_amount,
            detail="money into bank clearing differs from what the bank notified",
        )
    for request in facts.paid_without_notification:
        yield Mismatch(
            area="bank",
            subject=f"payment request {request.reference}",
            cause=MismatchCause.paid_without_notification,
            expected=request.amount,
            actual=0,
            detail=f"payment request {request.payment_request_id} is paid"
            " but no credited bank notification backs it",
        )


def _revenue_key(account_kind: str, owner_id: str | None) -> tuple[str, str | None]:
    if account_kind == "transit_revenue":
        return Source.transit.value, None
    return Source.parking.value, owner_id


def _revenue_lines(facts: DayFacts) -> list[RevenueLine]:
    journal: dict[tuple[str, str | None], dict[str, tuple[int, int]]] = defaultdict(dict)
    for line in facts.journal:
        journal[(line.source, line.lot_id)][line.kind] = (line.count, line.amount)
    ledger: dict[tuple[str, str | None], int] = defaultdict(int)
    for entry in facts.ledger_revenue:
        ledger[_revenue_key(entry.account_kind, entry.owner_id)] += entry.amount
    lines = []
    for source, lot_id in sorted(set(journal) | set(ledger), key=lambda k: (k[0], k[1] or "")):
        kinds = journal.get((source, lot_id), {})
        charges, charged = kinds.get("charge", (0, 0))
        _, captured = kinds.get("capture", (0, 0))
        _, qr_paid = kinds.get("payment", (0, 0))
        refunds, refunded = kinds.get("refund", (0, 0))
        lines.append(
            RevenueLine(
                source=Source(source),
                lot_id=lot_id,
                charges=charges,
                charged_amount=charged,
                captured_amount=captured,
                qr_paid_amount=qr_paid,
                refunds=refunds,
                refunded_amount=refunded,
                net_amount=charged + captured + qr_paid - refunded,
                ledger_amount=ledger.get((source, lot_id), 0),
            )
        )
    return lines


def _revenue_mismatches(lines: list[RevenueLine]) -> Iterable[Mismatch]:
    for line in lines:
        if line.net_amount != line.ledger_amount:
            yield Mismatch(
                area="revenue",
                subject=_revenue_subject(line),
                cause=MismatchCause.revenue_differs_from_journal,
                expected=line.net_amount,
                actual=line.ledger_amount,
                detail="revenue sub-accounts moved differently from charges − refunds",
            )


def _revenue_subject(line: RevenueLine) -> str:
    return "transit" if line.source is Source.transit else f"parking lot {line.lot_id}"


def build_report(day: date, facts: DayFacts) -> ReconciliationReport:
    start, end = day_window(day)
    revenue = _revenue_lines(facts)
    mismatches = [
        *_bank_mismatches(facts),
        *_revenue_mismatches(revenue),
        *(
            Mismatch(
                area="ledger",
                subject=f"transfer {line.transfer_id}",
                cause=MismatchCause.unbalanced_transfer,
                expected=0,
                actual=line.postings_total,
                detail=f"{line.legs} postings that do not cancel out",
            )
            for line in facts.unbalanced
        ),
    ]
    bank = BankTotals(
        notifications=len(facts.notifications),
        notified_amount=sum(line.amount for line in facts.notifications),
        credited_amount=sum(n.amount for n in facts.notifications if n.outcome == "credited"),
        suspense_amount=sum(n.amount for n in facts.notifications if n.outcome == "suspense"),
        clearing_amount=facts.clearing_amount,
        unpaid_requests=facts.unpaid_requests,
        unpaid_amount=facts.unpaid_amount,
    )
    return ReconciliationReport(
        day=day,
        timezone=str(HANOI),
        window_start=start,
        window_end=end,
        bank=bank,
        revenue=revenue,
        mismatches=mismatches,
        ok=not mismatches,
    )


def to_csv(report: ReconciliationReport) -> str:
    """One row per total, per revenue source and per mismatch; amounts in VND."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    bank = report.bank
    writer.writerows(
        [
            ("total", "bank", "notifications", "", "", bank.notifications, ""),
            ("total", "bank", "notified_amount", "", "", bank.notified_amount, ""),
            ("total", "bank", "credited_amount", "", "", bank.credited_amount, ""),
            ("total", "bank", "suspense_amount", "", "", bank.suspense_amount, ""),
            (
                "total",
                "bank",
                "clearing_amount",
                "",
                bank.notified_amount,
                bank.clearing_amount,
                "",
            ),
            (
                "info",
                "bank",
                "unpaid_requests",
                "",
                "",
                bank.unpaid_requests,
                f"{bank.unpaid_amount} VND requested and not paid (not a mismatch)",
            ),
        ]
    )
    for line in report.revenue:
        writer.writerow(
            (
                "revenue",
                "revenue",
                _revenue_subject(line),
                "",
                line.net_amount,
                line.ledger_amount,
                f"{line.charges} charges {line.charged_amount}, captured {line.captured_amount},"
                f" VietQR {line.qr_paid_amount}, {line.refunds} refunds {line.refunded_amount}",
            )
        )
    for mismatch in report.mismatches:
        writer.writerow(
            (
                "mismatch",
                mismatch.area,
                mismatch.subject,
                mismatch.cause.value,
                "" if mismatch.expected is None else mismatch.expected,
                "" if mismatch.actual is None else mismatch.actual,
                mismatch.detail,
            )
        )
    return buffer.getvalue()
