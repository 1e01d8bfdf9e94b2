"""Read-only SQL of the ledger invariant and of the daily reconciliation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.repository import (
    Record,
    accounts,
    bank_notifications,
    payment_requests,
    postings,
    transfers,
)

# Ledger invariant -------------------------------------------------------------------------------


async def use_consistent_snapshot(session: AsyncSession) -> None:
    """Every following read sees one instant of the ledger (first statement of the transaction)."""
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))


async def ledger_totals(session: AsyncSession) -> Record:
    return (
        await session.execute(
            text(
                "SELECT (SELECT coalesce(sum(amount), 0) FROM postings) AS postings_total,"
                " (SELECT coalesce(sum(balance), 0) FROM accounts) AS balances_total,"
                " (SELECT count(*) FROM accounts) AS accounts_checked,"
                " (SELECT count(*) FROM transfers) AS transfers_checked"
            )
        )
    ).one()


_UNBALANCED_TRANSFERS = """
SELECT t.id AS transfer_id, count(p.account_id) AS legs,
       coalesce(sum(p.amount), 0) AS postings_total
  FROM transfers t LEFT JOIN postings p ON p.transfer_id = t.id
 WHERE t.posted_at >= CAST(:since AS timestamptz) AND t.posted_at < CAST(:until AS timestamptz)
 GROUP BY t.id, t.amount, t.debit_account_id, t.credit_account_id
HAVING count(p.account_id) <> 2
    OR coalesce(sum(p.amount), 0) <> 0
    OR count(*) FILTER (
           WHERE (p.account_id = t.debit_account_id AND p.amount = -t.amount)
              OR (p.account_id = t.credit_account_id AND p.amount = t.amount)) <> 2
 ORDER BY t.id
 LIMIT :limit
"""


async def unbalanced_transfers(
    session: AsyncSession, since: datetime, until: datetime, limit: int
) -> list[Record]:
    rows = await session.execute(
        text(_UNBALANCED_TRANSFERS), {"since": since, "until": until, "limit": limit}
    )
    return list(rows.all())


async def accounts_not_matching_postings(session: AsyncSession, limit: int) -> list[Record]:
    rows = await session.execute(
        text(
            "SELECT a.id AS account_id, a.code, a.balance,"
            "       coalesce(s.total, 0) AS postings_total"
            "  FROM accounts a"
            "  LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings"
            "              GROUP BY account_id) s ON s.account_id = a.id"
            " WHERE a.balance <> coalesce(s.total, 0)"
            " ORDER BY a.code LIMIT :limit"
        ),
        {"limit": limit},
    )
    return list(rows.all())


# Reconciliation ---------------------------------------------------------------------------------


async def notifications_between(
    session: AsyncSession, since: datetime, until: datetime
) -> list[Record]:
    rows = await session.execute(
        select(
            bank_notifications.c.bank_transaction_id,
            bank_notifications.c.amount,
            bank_notifications.c.reference,
            bank_notifications.c.outcome,
            bank_notifications.c.cause,
            payment_requests.c.amount.label("expected_amount"),
            transfers.c.amount.label("transfer_amount"),
        )
        .select_from(
            bank_notifications.outerjoin(
                transfers, transfers.c.id == bank_notifications.c.transfer_id
            ).outerjoin(
                payment_requests, payment_requests.c.id == bank_notifications.c.payment_request_id
            )
        )
        .where(bank_notifications.c.received_at >= since, bank_notifications.c.received_at < until)
        .order_by(bank_notifications.c.received_at)
    )
    return list(rows.all())


async def clearing_movement_between(session: AsyncSession, since: datetime, until: datetime) -> int:
    """Money that arrived at the bank according to the ledger (clearing is debited for it)."""
    total = await session.scalar(
        select(func.coalesce(-func.sum(postings.c.amount), 0))
        .select_from(
            postings.join(transfers, transfers.c.id == postings.c.transfer_id).join(
                accounts, accounts.c.id == postings.c.account_id
            )
        )
        .where(
            accounts.c.kind == "bank_clearing",
            transfers.c.posted_at >= since,
            transfers.c.posted_at < until,
        )
    )
    return int(total or 0)


async def paid_requests_without_notification(
    session: AsyncSession, since: datetime, until: datetime
) -> list[Record]:
    credited = (
        select(bank_notifications.c.id)
        .where(
            bank_notifications.c.payment_request_id == payment_requests.c.id,
            bank_notifications.c.outcome == "credited",
            bank_notifications.c.transfer_id == payment_requests.c.paid_transfer_id,
        )
        .exists()
    )
    rows = await session.execute(
        select(payment_requests.c.id, payment_requests.c.reference, payment_requests.c.amount)
        .where(
            payment_requests.c.status == "paid",
            payment_requests.c.paid_at >= since,
            payment_requests.c.paid_at < until,
            ~credited,
        )
        .order_by(payment_requests.c.paid_at)
    )
    return list(rows.all())


async def unpaid_requests_between(
    session: AsyncSession, since: datetime, until: datetime
) -> tuple[int, int]:
    count, amount = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(payment_requests.c.amount), 0)).where(
                payment_requests.c.status == "pending",
                payment_requests.c.created_at >= since,
                payment_requests.c.created_at < until,
            )
        )
    ).one()
    return int(count), int(amount)


async def revenue_journal_between(
    session: AsyncSession, since: datetime, until: datetime
) -> list[Record]:
    """Charges, captures, VietQR payments and refunds per source and lot, from the journal."""
    rows = await session.execute(
        select(
            transfers.c.source,
            transfers.c.lot_id,
            transfers.c.kind,
            func.count().label("transfer_count"),
            func.sum(transfers.c.amount).label("amount"),
        )
        .where(
            transfers.c.kind.in_(("charge", "capture", "payment", "refund")),
            transfers.c.posted_at >= since,
            transfers.c.posted_at < until,
        )
        .group_by(transfers.c.source, transfers.c.lot_id, transfers.c.kind)
    )
    return list(rows.all())


async def revenue_postings_between(
    session: AsyncSession, since: datetime, until: datetime
) -> list[Record]:
    """Net postings on revenue sub-accounts, summed over the shards of each logical account."""
    rows = await session.execute(
        select(
            accounts.c.kind,
            accounts.c.owner_id,
            func.sum(postings.c.amount).label("amount"),
        )
        .select_from(
            postings.join(accounts, accounts.c.id == postings.c.account_id).join(
                transfers, transfers.c.id == postings.c.transfer_id
            )
        )
        .where(
            accounts.c.kind.in_(("transit_revenue", "parking_revenue")),
            transfers.c.posted_at >= since,
            transfers.c.posted_at < until,
        )
        .group_by(accounts.c.kind, accounts.c.owner_id)
    )
    return list(rows.all())
