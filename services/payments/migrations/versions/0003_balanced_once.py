"""Each transfer's balance is checked once at commit, not once per row.

`transfers_balanced` and `postings_balanced` (payments_0001) are deferred row triggers: a
transfer and its two postings queued three identical checks, run one after the other at
commit (three of the aggregate queries per transfer, ≈ 0.06 ms each). The checks run in the
order their rows were inserted, after every statement of the transaction; the first one of a
transfer sees its final rows, so the check remembers the last transfer it passed (a
transaction-local setting) and the events of the same transfer right after it skip the query.
A transfer's rows inserted apart (another transfer's between) are still checked again.

(The ledger's writers never set these constraints IMMEDIATE: checked row by row, a transfer
would fail before its postings exist.)

Revision ID: payments_0003
Revises: payments_0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "payments_0003"
down_revision = "payments_0002"
branch_labels = None
depends_on = None

_CHECK = """
        SELECT count(*),
               coalesce(sum(p.amount), 0),
               count(*) FILTER (
                   WHERE (p.account_id = t.debit_account_id AND p.amount = -t.amount)
                      OR (p.account_id = t.credit_account_id AND p.amount = t.amount))
          INTO legs, total, matching
          FROM transfers t JOIN postings p ON p.transfer_id = t.id
         WHERE t.id = checked_id;
        IF legs <> 2 OR total <> 0 OR matching <> 2 THEN
            RAISE EXCEPTION 'transfer % is not balanced (% legs, sum %)', checked_id, legs, total
                USING ERRCODE = 'check_violation';
        END IF;
"""


def balance_check(remembered: str | None) -> str:
    """The trigger function; with `remembered` (an SQL expression of `checked_id`) it skips a
    check whose expression equals the last one it passed in the transaction."""
    skip, remember = "", ""
    if remembered is not None:
        skip = f"""
        IF current_setting('payments.last_balanced_transfer', true) = {remembered} THEN
            RETURN NULL;
        END IF;"""
        remember = f"""
        PERFORM set_config('payments.last_balanced_transfer', {remembered}, true);"""
    return f"""
    CREATE OR REPLACE FUNCTION assert_transfer_balanced() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        checked_id uuid;
        legs bigint;
        total bigint;
        matching bigint;
    BEGIN
        IF TG_TABLE_NAME = 'transfers' THEN
            checked_id := NEW.id;
        ELSE
            checked_id := NEW.transfer_id;
        END IF;{skip}
{_CHECK}{remember}
        RETURN NULL;
    END
    $$
"""


CHECK_ONCE = balance_check("checked_id::text")
CHECK_EACH = balance_check(None)


def upgrade() -> None:
    op.execute(CHECK_ONCE)


def downgrade() -> None:
    op.execute(CHECK_EACH)
