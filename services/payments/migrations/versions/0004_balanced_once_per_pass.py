"""A transfer checked once per firing pass of the deferred checks, not once per transaction.

payments_0003 remembered the last transfer it found balanced for the rest of the transaction.
If a transaction fired the checks early (`SET CONSTRAINTS ... IMMEDIATE`) and then inserted
another posting for that transfer, the later check matched the memory and skipped the query: an
unbalanced transfer could commit. The memory now carries the statement that fired the pass
(`statement_timestamp()`), so the checks fired by another statement, the COMMIT included, query
again. The ledger's writers never do this; the database refuses it anyway.

Revision ID: payments_0004
Revises: payments_0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from shared.migrations import install_functions

revision = "payments_0004"
down_revision = "payments_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install_functions("payments", "assert_transfer_balanced")


def downgrade() -> None:
    """Nothing to undo: the function keeps its current text (see shared.migrations)."""
