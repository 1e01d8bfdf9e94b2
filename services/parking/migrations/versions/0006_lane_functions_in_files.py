"""Parking's database functions are the text of `services/parking/sql/*.sql` (shared.migrations).

`lane_claim_key` and `lane_exit_claim` (parking_0003) have had no caller since parking_0004
replaced them with `lane_key` and `lane_exit_begin`, which stayed beside them for code still
running during that deploy: they go.

Revision ID: parking_0006
Revises: parking_0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from shared.migrations import drop_functions

revision = "parking_0006"
down_revision = "parking_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    drop_functions("lane_exit_claim", "lane_claim_key")


def downgrade() -> None:
    """Nothing to restore: no code calls them."""
