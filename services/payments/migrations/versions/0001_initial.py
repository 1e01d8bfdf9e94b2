"""Initial payments schema: kit tables and accounts.

Revision ID: payments_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from shared.migrations import create_kit_tables

revision = "payments_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kit_tables()
    op.create_table(
        "accounts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("code", sa.String(120), nullable=False, unique=True),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("owner_id", sa.String(120)),
        sa.Column("allow_negative", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("balance", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("allow_negative OR balance >= 0", name="balance_not_negative"),
    )


def downgrade() -> None:
    op.drop_table("accounts")
