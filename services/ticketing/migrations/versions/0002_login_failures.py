"""Wrong passwords per phone number, for the login throttle.

Revision ID: ticketing_0002
Revises: ticketing_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ticketing_0002"
down_revision = "ticketing_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("phone", sa.String(16), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("login_failures")
