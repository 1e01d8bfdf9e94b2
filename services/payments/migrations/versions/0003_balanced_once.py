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

revision = "payments_0003"
down_revision = "payments_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to do: payments_0004 installs the current text (see shared.migrations)."""


def downgrade() -> None:
    """Nothing to undo."""
