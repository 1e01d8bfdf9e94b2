"""The payments schema: every table of the service and the row type its queries return.

Lock order, to keep concurrent money movements free of deadlocks: first the business row
(hold, original charge, payment request), then wallets (by id), then system accounts in the
order holds → bank clearing → revenue → suspense. The posting engine (`post_transfer`,
services/payments/sql/) follows it by taking the wallet leg first whichever side it is on.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.engine import Row

from shared.idempotency import idempotency_keys_table
from shared.inbox import processed_events_table
from shared.outbox import outbox_table

metadata = MetaData()
outbox = outbox_table(metadata)
idempotency_keys = idempotency_keys_table(metadata)
processed_events = processed_events_table(metadata)

Record: TypeAlias = Row[*tuple[Any, ...]]

accounts = Table(
    "accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("code", String(120), nullable=False, unique=True),
    Column("kind", String(30), nullable=False),
    Column("owner_id", String(120)),
    Column("shard", SmallInteger),
    Column("allow_negative", Boolean, nullable=False, server_default="false"),
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("debit_account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("credit_account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("wallet_account_id", UUID(as_uuid=True)),
    Column("source", String(10)),
    Column("lot_id", String(64)),
    Column("original_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id")),
    Column("hold_id", UUID(as_uuid=True)),
    Column("payment_request_id", UUID(as_uuid=True)),
    Column("bank_notification_id", UUID(as_uuid=True)),
    Column("posted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

postings = Table(
    "postings",
    metadata,
    Column("transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id"), primary_key=True),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), primary_key=True),
    Column("amount", BigInteger, nullable=False),
)

holds = Table(
    "holds",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("wallet_account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("holds_account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("captured_amount", BigInteger, nullable=False, server_default="0"),
    Column("status", String(10), nullable=False, server_default="pending"),
    Column("source", String(10), nullable=False),
    Column("lot_id", String(64)),
    Column("hold_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id"), nullable=False),
    Column("capture_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id")),
    Column("release_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id")),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("settled_at", DateTime(timezone=True)),
)

payment_requests = Table(
    "payment_requests",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("reference", String(25), nullable=False, unique=True),
    Column("purpose", String(20), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("wallet_account_id", UUID(as_uuid=True), ForeignKey("accounts.id")),
    Column("lot_id", String(64)),
    Column("parking_session_id", String(64)),
    Column("qr_payload", String(512), nullable=False),
    Column("status", String(10), nullable=False, server_default="pending"),
    Column("paid_transfer_id", UUID(as_uuid=True), ForeignKey("transfers.id")),
    Column("paid_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

bank_notifications = Table(
    "bank_notifications",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("bank_transaction_id", String(64), nullable=False, unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("bank_bin", String(6), nullable=False),
    Column("account", String(19), nullable=False),
    Column("reference", String(25)),
    Column("description", String(255)),
    Column("occurred_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("outcome", String(10), nullable=False),
    Column("cause", String(30)),
    Column("payment_request_id", UUID(as_uuid=True), ForeignKey("payment_requests.id")),
    Column(
        "transfer_id",
        UUID(as_uuid=True),
        ForeignKey("transfers.id", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
    Column("raw_body", LargeBinary),  # as the bank signed it (null before payments_0005)
)
