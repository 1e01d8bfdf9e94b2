"""Initial payments schema: kit tables, accounts, the append-only ledger, holds, VietQR.

Revision ID: payments_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from shared.migrations import create_kit_tables, drop_functions, install_functions

revision = "payments_0001"
down_revision = None
branch_labels = None
depends_on = None

# Same namespace as services.payments.repository.balances.SYSTEM_ACCOUNT_NAMESPACE (frozen here).
SYSTEM_ACCOUNT_NAMESPACE = uuid.UUID("6f1c2a40-3d1e-4b8e-9a57-5b0c9e7d2f11")
SEEDED_ACCOUNTS = (
    # code, kind, allow_negative: clearing mirrors the bank, so its balance is the money there.
    ("bank_clearing", "bank_clearing", True),
    ("suspense", "suspense", False),
)

ACCOUNT_KINDS = (
    "rider_wallet",
    "vehicle_wallet",
    "transit_revenue",
    "parking_revenue",
    "holds",
    "bank_clearing",
    "suspense",
)
TRANSFER_KINDS = ("charge", "hold", "capture", "release", "refund", "topup", "payment", "suspense")

# The functions' text is in services/payments/sql/ (see shared.migrations).
LEDGER_FUNCTIONS = ("ledger_is_append_only", "assert_transfer_balanced")
LEDGER_TRIGGERS = (
    """
    CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON transfers
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only()
    """,
    """
    CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON postings
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only()
    """,
    """
    CREATE CONSTRAINT TRIGGER transfers_balanced AFTER INSERT ON transfers
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION assert_transfer_balanced()
    """,
    """
    CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION assert_transfer_balanced()
    """,
)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    create_kit_tables()
    op.create_table(
        "accounts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("code", sa.String(120), nullable=False, unique=True),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("owner_id", sa.String(120)),
        sa.Column("shard", sa.SmallInteger),
        sa.Column("allow_negative", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("balance", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("allow_negative OR balance >= 0", name="balance_not_negative"),
        sa.CheckConstraint(_one_of("kind", ACCOUNT_KINDS), name="account_kind_known"),
    )
    op.create_index("accounts_by_kind_owner", "accounts", ["kind", "owner_id"])
    op.create_table(
        "transfers",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column(
            "debit_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False
        ),
        sa.Column(
            "credit_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False
        ),
        sa.Column("wallet_account_id", UUID(as_uuid=True)),
        sa.Column("source", sa.String(10)),
        sa.Column("lot_id", sa.String(64)),
        sa.Column("original_transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id")),
        sa.Column("hold_id", UUID(as_uuid=True)),
        sa.Column("payment_request_id", UUID(as_uuid=True)),
        sa.Column("bank_notification_id", UUID(as_uuid=True)),
        sa.Column(
            "posted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("amount > 0", name="transfer_amount_positive"),
        sa.CheckConstraint("debit_account_id <> credit_account_id", name="transfer_two_accounts"),
        sa.CheckConstraint(_one_of("kind", TRANSFER_KINDS), name="transfer_kind_known"),
        sa.CheckConstraint(
            "source IS NULL OR source IN ('transit', 'parking')", name="transfer_source_known"
        ),
        sa.CheckConstraint(
            "(source = 'parking') = (lot_id IS NOT NULL)", name="transfer_lot_iff_parking"
        ),
    )
    op.create_index("transfers_by_posted_at", "transfers", ["posted_at"])
    op.create_index(
        "transfers_by_original",
        "transfers",
        ["original_transfer_id"],
        postgresql_where=sa.text("original_transfer_id IS NOT NULL"),
    )
    op.create_table(
        "postings",
        sa.Column(
            "transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), primary_key=True
        ),
        sa.Column("account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("amount", sa.BigInteger, nullable=False),  # credit > 0, debit < 0
        sa.CheckConstraint("amount <> 0", name="posting_amount_not_zero"),
    )
    op.create_index("postings_by_account", "postings", ["account_id"])
    op.create_table(
        "holds",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "wallet_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False
        ),
        sa.Column(
            "holds_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id"), nullable=False
        ),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("captured_amount", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("status", sa.String(10), nullable=False, server_default="pending"),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("lot_id", sa.String(64)),
        sa.Column(
            "hold_transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id"), nullable=False
        ),
        sa.Column("capture_transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id")),
        sa.Column("release_transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id")),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "amount > 0 AND captured_amount BETWEEN 0 AND amount", name="hold_amounts"
        ),
        sa.CheckConstraint(
            _one_of("status", ("pending", "captured", "voided", "expired")),
            name="hold_status_known",
        ),
    )
    op.create_index(
        "pending_holds_by_expiry",
        "holds",
        ["expires_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "payment_requests",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("reference", sa.String(25), nullable=False, unique=True),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("wallet_account_id", UUID(as_uuid=True), sa.ForeignKey("accounts.id")),
        sa.Column("lot_id", sa.String(64)),
        sa.Column("parking_session_id", sa.String(64)),
        sa.Column("qr_payload", sa.String(512), nullable=False),
        sa.Column("status", sa.String(10), nullable=False, server_default="pending"),
        sa.Column("paid_transfer_id", UUID(as_uuid=True), sa.ForeignKey("transfers.id")),
        sa.Column("paid_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("amount > 0", name="payment_request_amount_positive"),
        sa.CheckConstraint(
            _one_of("status", ("pending", "paid")), name="payment_request_status_known"
        ),
        sa.CheckConstraint(
            "(purpose = 'wallet_topup' AND wallet_account_id IS NOT NULL)"
            " OR (purpose = 'parking_fee' AND lot_id IS NOT NULL"
            " AND parking_session_id IS NOT NULL)",
            name="payment_request_purpose_complete",
        ),
    )
    op.create_table(
        "bank_notifications",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("bank_transaction_id", sa.String(64), nullable=False, unique=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("bank_bin", sa.String(6), nullable=False),
        sa.Column("account", sa.String(19), nullable=False),
        sa.Column("reference", sa.String(25)),
        sa.Column("description", sa.String(255)),
        sa.Column("occurred_at", sa.DateTime(timezone=True)),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("cause", sa.String(30)),
        sa.Column("payment_request_id", UUID(as_uuid=True), sa.ForeignKey("payment_requests.id")),
        # The notification row is written first (it deduplicates), its transfer in the same commit.
        sa.Column(
            "transfer_id",
            UUID(as_uuid=True),
            sa.ForeignKey("transfers.id", deferrable=True, initially="DEFERRED"),
            nullable=False,
        ),
        sa.CheckConstraint("amount > 0", name="notification_amount_positive"),
        sa.CheckConstraint(
            "(outcome = 'credited' AND cause IS NULL)"
            " OR (outcome = 'suspense' AND cause IS NOT NULL)",
            name="notification_outcome_explained",
        ),
    )
    op.create_index("bank_notifications_by_received_at", "bank_notifications", ["received_at"])
    install_functions("payments", *LEDGER_FUNCTIONS)
    for statement in LEDGER_TRIGGERS:
        op.execute(statement)
    accounts = sa.table(
        "accounts",
        sa.column("id", UUID(as_uuid=True)),
        sa.column("code", sa.String),
        sa.column("kind", sa.String),
        sa.column("allow_negative", sa.Boolean),
    )
    op.bulk_insert(
        accounts,
        [
            {
                "id": uuid.uuid5(SYSTEM_ACCOUNT_NAMESPACE, code),
                "code": code,
                "kind": kind,
                "allow_negative": allow_negative,
            }
            for code, kind, allow_negative in SEEDED_ACCOUNTS
        ],
    )


def downgrade() -> None:
    for table in (
        "bank_notifications",
        "payment_requests",
        "holds",
        "postings",
        "transfers",
        "accounts",
    ):
        op.drop_table(table)
    drop_functions(*LEDGER_FUNCTIONS)
