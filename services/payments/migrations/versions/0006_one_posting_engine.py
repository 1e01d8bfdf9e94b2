"""One posting engine: every transfer is posted by the PL/pgSQL `post_transfer`.

Refunds, hold expiry and bank notifications posted from Python (one CTE statement) and the
one-round-trip functions through `journal`: two engines, with a journal that never set
payment_request_id or bank_notification_id, another error for a short non-wallet account and
another lock order. Now both call `post_transfer` (the wallet first, then the other account;
`debit_account`, `credit_account`, `credit_system`, then `journal`), and a refusal of either
says the same thing. `release_hold` is the release of a void, of a capture's rest;
`claim_hold` (was `pending_hold`) the start of both.

Revision ID: payments_0006
Revises: payments_0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from shared.migrations import drop_functions, install_functions

revision = "payments_0006"
down_revision = "payments_0005"
branch_labels = None
depends_on = None

CREATED = ("debit_account", "credit_account", "post_transfer", "release_hold", "claim_hold")


def upgrade() -> None:
    drop_functions("credit_system")  # returns the new balance now (was void)
    install_functions(
        "payments",
        "credit_system",
        "journal",
        *CREATED,
        "charge_once",
        "place_hold_once",
        "capture_hold_once",
        "void_hold_once",
    )
    drop_functions("debit_wallet", "move_balance", "pending_hold")


def downgrade() -> None:
    drop_functions(*reversed(CREATED))
