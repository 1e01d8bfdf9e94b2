"""Lane claims as one-row PL/pgSQL functions, without nested set-returning calls.

`lane_claim_key` and `lane_exit_claim` (parking_0003) return sets: every call filled a tuple
store, and an exit's claim went through three nested PL/pgSQL calls (`lane_exit_claim` →
`lane_claim_key`, `lane_open_session`), each materialising its rows. `lane_key` and
`lane_exit_begin` do the same steps in the same order (the key's session-level advisory lock,
then the stored answer read with a fresh snapshot; at an exit, the open session found, its lock
taken, the row read again) and return their one row through OUT parameters.

`lane_claim` (parking_0002) has had no caller since parking_0003 and is dropped; parking_0006
drops `lane_claim_key` and `lane_exit_claim`, which stayed for code still running during a deploy.

Revision ID: parking_0004
Revises: parking_0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from shared.migrations import drop_functions, install_functions

revision = "parking_0004"
down_revision = "parking_0003"
branch_labels = None
depends_on = None

FUNCTIONS = ("lane_key", "lane_exit_begin")  # services/parking/sql


def upgrade() -> None:
    drop_functions("lane_claim")
    install_functions("parking", *FUNCTIONS)


def downgrade() -> None:
    drop_functions(*FUNCTIONS)
