"""The kit's idempotency guard in the ticketing schema.

`shared.idempotency.Idempotency.call` claims and stores a key through the guard's functions
(`idempotency_claim`, `idempotency_store`, shared/sql/), read by `guarded_answer`: the network
import (`POST /v1/network/versions`) is ticketing's first route on it.

Revision ID: ticketing_0004
Revises: ticketing_0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from shared.migrations import drop_idempotency_guard, install_idempotency_guard

revision = "ticketing_0004"
down_revision = "ticketing_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    install_idempotency_guard()


def downgrade() -> None:
    drop_idempotency_guard()
