"""Initial ticketing schema: kit tables and fare products.

Revision ID: ticketing_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_kit_tables

revision = "ticketing_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kit_tables()
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
        sa.CheckConstraint("price_vnd >= 0", name="price_not_negative"),
    )


def downgrade() -> None:
    op.drop_table("products")
