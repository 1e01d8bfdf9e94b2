"""Charges, holds and parking payment requests in one round trip: PL/pgSQL functions.

Each `*_once` function does what the request's transaction did statement by statement: it
claims the Idempotency-Key (`idempotency_claim`), checks the rules, posts the transfer with
its postings and outbox event, renders the answer from the template it was given and stores
it with the key (`idempotency_store`). Called alone in autocommit, effect and key commit
together in the same round trip. A refusal writes nothing and says why in its outcome.

Lock order as in services.payments.repository: the business row (hold), then the wallet,
then system accounts (holds, revenue).

Revision ID: payments_0002
Revises: payments_0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from shared.migrations import (
    drop_functions,
    drop_idempotency_guard,
    install_functions,
    install_idempotency_guard,
)

revision = "payments_0002"
down_revision = "payments_0001"
branch_labels = None
depends_on = None

# In the order they are installed; their text is in services/payments/sql/.
FUNCTIONS = (
    "refused",
    "credit_system",
    "journal",
    "charge_once",
    "place_hold_once",
    "capture_hold_once",
    "void_hold_once",
    "parking_payment_request_once",
)


def upgrade() -> None:
    install_idempotency_guard()
    install_functions("payments", *FUNCTIONS)


def downgrade() -> None:
    drop_functions(*reversed(FUNCTIONS))
    drop_idempotency_guard()
