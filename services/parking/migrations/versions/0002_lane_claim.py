"""Lane decisions claim their Idempotency-Key and read what they decide on in one round trip.

`lane_claim` takes the key's transaction-scoped advisory lock and then reads the stored answer,
in that order and with a fresh snapshot (a PL/pgSQL statement sees what committed before it
ran): a plain SELECT taking the lock would read the key with the snapshot of its start and
could miss the answer of a first request that committed in between.

(That first claim, `lane_claim`, was replaced by `lane_key` in parking_0004 and has no file:
only the latest revision carries function text, see shared.migrations.)

Revision ID: parking_0002
Revises: parking_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

revision = "parking_0002"
down_revision = "parking_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to do: parking_0004 installs its successor."""


def downgrade() -> None:
    """Nothing to undo."""
