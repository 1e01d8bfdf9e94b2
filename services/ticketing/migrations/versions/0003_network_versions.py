"""Network and fare versions: each imported GTFS feed with the instant it takes effect. The fare
products are read from the version in force, so their table goes.

Revision ID: ticketing_0003
Revises: ticketing_0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from shared.migrations import migration

revision = "ticketing_0003"
down_revision = "ticketing_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "network_versions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False, unique=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("feed", sa.LargeBinary, nullable=False),
        sa.Column("summary", JSONB, nullable=False),
    )
    op.drop_table("products")


def downgrade() -> None:
    migration("ticketing", "0001_initial").create_products_table()
    op.drop_table("network_versions")
