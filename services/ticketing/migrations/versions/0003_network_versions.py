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
    op.create_table(
        "products",
        sa.Column("code", sa.String(40), primary_key=True),
        sa.Column("name_vi", sa.String(120), nullable=False),
        sa.Column("name_en", sa.String(120), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("price_vnd", sa.Integer, nullable=False),
        sa.Column("categories", sa.ARRAY(sa.String(20)), nullable=False),
        sa.Column("validity_days", sa.Integer),
        sa.Column("rides", sa.Integer),
        sa.Column("lines", sa.ARRAY(sa.String(10)), nullable=False),
        sa.Column("distance_priced", sa.Boolean, nullable=False),
        sa.Column("line_choice", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("credential_code", sa.String(8), nullable=False, unique=True),
        sa.CheckConstraint("price_vnd >= 0", name="price_not_negative"),
    )
    op.drop_table("network_versions")
