"""The kit's idempotency guard in the parking schema.

`shared.idempotency.Idempotency.call` claims and stores a key through the guard's functions
(`idempotency_claim`, `idempotency_store`, shared/sql/), the protocol payments' one-round-trip
functions use, read by the same `guarded_answer`.

Revision ID: parking_0005
Revises: parking_0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from shared.migrations import drop_idempotency_guard, install_idempotency_guard

revision = "parking_0005"
down_revision = "parking_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install_idempotency_guard()


def downgrade() -> None:
    drop_idempotency_guard()
