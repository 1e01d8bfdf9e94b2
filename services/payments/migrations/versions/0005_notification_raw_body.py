"""Bank notifications keep the signed body they arrived in.

A notification's text is stored as PostgreSQL can hold it (a NUL or a lone surrogate becomes
U+FFFD, see shared.fields.KeptText); the raw body the bank signed is kept beside it, byte for
byte, so what the bank said can always be shown and its signature checked again.

Revision ID: payments_0005
Revises: payments_0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "payments_0005"
down_revision = "payments_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bank_notifications", sa.Column("raw_body", sa.LargeBinary))


def downgrade() -> None:
    op.drop_column("bank_notifications", "raw_body")
