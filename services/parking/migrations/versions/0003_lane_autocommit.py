"""Lane decisions in autocommit: two round trips on the critical path instead of four.

A lane decision no longer holds a transaction open while it asks Redis and payments. Its first
statement takes session-level advisory locks (the Idempotency-Key's; at an exit, the session's)
and its last statement writes everything at once and commits on its own; the locks are let go
right after, off the lane's critical path. Whatever else writes an open session takes the same
session lock (`session_lock`) inside its transaction, as the row lock did before.

Also: what a plate owes is found without reading its every session (entries show it).

Revision ID: parking_0003
Revises: parking_0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import drop_functions, install_functions

revision = "parking_0003"
down_revision = "parking_0002"
branch_labels = None
depends_on = None

FUNCTIONS = ("session_lock", "lane_lock_session", "lane_open_session")  # services/parking/sql


def upgrade() -> None:
    op.create_index(
        "sessions_debts_by_plate",
        "sessions",
        ["plate_key"],
        postgresql_where=sa.text("debt_status = 'outstanding'"),
    )
    install_functions("parking", *FUNCTIONS)


def downgrade() -> None:
    drop_functions(*FUNCTIONS)
    op.drop_index("sessions_debts_by_plate", "sessions")
