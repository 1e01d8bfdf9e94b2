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

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "payments_0004"
down_revision = "payments_0003"
branch_labels = None
depends_on = None


def _payments_0003() -> ModuleType:
    """payments_0003's module (migration files are loaded by path, not as a package)."""
    path = Path(__file__).with_name("0003_balanced_once.py")
    spec = importlib.util.spec_from_file_location("payments_0003", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_PAYMENTS_0003 = _payments_0003()
CHECK_ONCE_PER_PASS: str = _PAYMENTS_0003.balance_check(
    "checked_id::text || '@' || statement_timestamp()::text"
)


def upgrade() -> None:
    op.execute(CHECK_ONCE_PER_PASS)


def downgrade() -> None:
    op.execute(_PAYMENTS_0003.CHECK_ONCE)
