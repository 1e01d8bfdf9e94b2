"""Read-only checks of the money: the ledger invariant and the daily reconciliation."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import reconciliation
from services.payments.repository import reports
from services.payments.schemas import (
    AccountMismatch,
    LedgerInvariant,
    ReconciliationReport,
    UnbalancedTransfer,
)

LEDGER_REPORT_LIMIT = 100
ALL_TIME = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


async def check_ledger(session: AsyncSession) -> LedgerInvariant:
    """Sum of all postings is 0, every transfer balances, every balance equals its postings.

    Must be the first thing the transaction does: it reads one consistent snapshot.
    """
    await reports.use_consistent_snapshot(session)
    totals = await reports.ledger_totals(session)
    unbalanced = await reports.unbalanced_transfers(session, *ALL_TIME, LEDGER_REPORT_LIMIT)
    mismatched = await reports.accounts_not_matching_postings(session, LEDGER_REPORT_LIMIT)
    return LedgerInvariant(
        ok=totals.postings_total == 0
        and totals.balances_total == 0
        and not unbalanced
        and not mismatched,
        postings_total=totals.postings_total,
        balances_total=totals.balances_total,
        accounts_checked=totals.accounts_checked,
        transfers_checked=totals.transfers_checked,
        unbalanced_transfers=[
            UnbalancedTransfer.model_validate(row, from_attributes=True) for row in unbalanced
        ],
        mismatched_accounts=[
            AccountMismatch.model_validate(row, from_attributes=True) for row in mismatched
        ],
        checked_at=datetime.now(UTC),
    )


async def reconcile(session: AsyncSession, day: date) -> ReconciliationReport:
    """Must be the first thing the transaction does: it reads one consistent snapshot."""
    await reports.use_consistent_snapshot(session)
    since, until = reconciliation.day_window(day)
    unpaid_count, unpaid_amount = await reports.unpaid_requests_between(session, since, until)
    facts = reconciliation.DayFacts(
        notifications=[
            reconciliation.NotificationLine(
                bank_transaction_id=row.bank_transaction_id,
                amount=row.amount,
                reference=row.reference,
                outcome=row.outcome,
                cause=row.cause,
                expected_amount=row.expected_amount,
                transfer_amount=row.transfer_amount,
            )
            for row in await reports.notifications_between(session, since, until)
        ],
        clearing_amount=await reports.clearing_movement_between(session, since, until),
        paid_without_notification=[
            reconciliation.PaidRequestLine(row.id, row.reference, row.amount)
            for row in await reports.paid_requests_without_notification(session, since, until)
        ],
        unpaid_requests=unpaid_count,
        unpaid_amount=unpaid_amount,
        journal=[
            reconciliation.JournalLine(
                row.source, row.lot_id, row.kind, row.transfer_count, row.amount
            )
            for row in await reports.revenue_journal_between(session, since, until)
        ],
        ledger_revenue=[
            reconciliation.LedgerRevenueLine(row.kind, row.owner_id, row.amount)
            for row in await reports.revenue_postings_between(session, since, until)
        ],
        unbalanced=[
            reconciliation.UnbalancedLine(row.transfer_id, row.legs, row.postings_total)
            for row in await reports.unbalanced_transfers(
                session, since, until, LEDGER_REPORT_LIMIT
            )
        ],
    )
    return reconciliation.build_report(day, facts)
