"""Initial parking schema: kit tables and lots.

Revision ID: parking_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_kit_tables

revision = "parking_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kit_tables()
    op.create_table(
        "lots",
        sa.Column("lot_id", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("district", sa.String(60), nullable=False),
        sa.Column("address", sa.String(200), nullable=False),
        sa.Column("motorbike_capacity", sa.Integer, nullable=False),
        sa.Column("car_capacity", sa.Integer, nullable=False),
        sa.Column("entry_lanes", sa.Integer, nullable=False),
        sa.Column("exit_lanes", sa.Integer, nullable=False),
        sa.CheckConstraint("motorbike_capacity >= 0 AND car_capacity >= 0", name="capacity"),
    )


def downgrade() -> None:
    op.drop_table("lots")
