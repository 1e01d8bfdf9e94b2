"""The ticketing schema: its tables as SQLAlchemy Core (the migrations create them,
`repository.py` queries them)."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from shared.idempotency import idempotency_keys_table
from shared.inbox import processed_events_table
from shared.outbox import outbox_table

metadata = MetaData()
outbox = outbox_table(metadata)
idempotency_keys = idempotency_keys_table(metadata)
processed_events = processed_events_table(metadata)

# Every imported GTFS feed (a canonical zip) with the instant it takes effect; never updated.
network_versions = Table(
    "network_versions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("effective_from", DateTime(timezone=True), nullable=False, unique=True),
    Column("sha256", String(64), nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Column("feed", LargeBinary, nullable=False),
    Column("summary", JSONB, nullable=False),
)

riders = Table(
    "riders",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("phone", String(16), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("category", String(20), nullable=False),
    Column("requested_category", String(20)),
    Column("category_status", String(10), nullable=False),
    Column("category_note", String(200)),
    Column("wallet_account_id", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("rider_id", UUID(as_uuid=True), ForeignKey("riders.id"), nullable=False),
    Column("family_id", UUID(as_uuid=True), nullable=False),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("refresh_tokens_family", "family_id"),
)

# Wrong passwords per phone number (known or not, so that a refusal says nothing about
# which numbers have accounts); the row goes at the next successful login.
login_failures = Table(
    "login_failures",
    metadata,
    Column("phone", String(16), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_failed_at", DateTime(timezone=True), nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("rider_id", UUID(as_uuid=True), ForeignKey("riders.id"), nullable=False),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("label", String(60)),
    Column("status", String(10), nullable=False),
    Column("is_switch", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoke_reason", String(200)),
    Index("devices_rider", "rider_id", "created_at"),
    Index("devices_fingerprint", "fingerprint"),
    Index(
        "devices_one_active_per_rider",
        "rider_id",
        unique=True,
        postgresql_where=text("status = 'active'"),
    ),
)

purchases = Table(
    "purchases",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("rider_id", UUID(as_uuid=True), ForeignKey("riders.id"), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("product_code", String(40), nullable=False),
    Column("line", String(10)),
    Column("price_vnd", Integer, nullable=False),
    Column("rider_category", String(20), nullable=False),
    Column("wallet_account_id", UUID(as_uuid=True)),
    Column("status", String(10), nullable=False),
    Column("charge_id", UUID(as_uuid=True)),
    Column("refund_id", UUID(as_uuid=True)),
    Column("failure_code", String(60)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    Index("purchases_rider_key", "rider_id", "idempotency_key", unique=True),
    Index(
        "purchases_unresolved",
        "next_attempt_at",
        postgresql_where=text("status IN ('pending', 'cancelling')"),
    ),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    # One ticket per purchase, whoever (endpoint or worker) completes it.
    Column("purchase_id", UUID(as_uuid=True), ForeignKey("purchases.id"), unique=True),
    Column("rider_id", UUID(as_uuid=True), ForeignKey("riders.id"), nullable=False),
    Column("product_code", String(40), nullable=False),
    Column("credential_code", String(8), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("mode", String(10), nullable=False),
    Column("rider_category", String(20), nullable=False),
    Column("rides", Integer),
    Column("lines", ARRAY(String(10)), nullable=False),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("valid_until", DateTime(timezone=True), nullable=False),
    Column("status", String(10), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoke_reason", String(200)),
    Index("tickets_rider", "rider_id", "created_at"),
)

issuer_keys = Table(
    "issuer_keys",
    metadata,
    Column("kid", String(8), primary_key=True),
    Column("sequence", Integer, nullable=False, unique=True),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("private_key_wrapped", LargeBinary, nullable=False),
    Column("status", String(10), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retiring_at", DateTime(timezone=True)),
    Column("not_after", DateTime(timezone=True)),
    Column("retired_at", DateTime(timezone=True)),
    Index(
        "issuer_keys_one_active", "status", unique=True, postgresql_where=text("status = 'active'")
    ),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("ticket_id", UUID(as_uuid=True), ForeignKey("tickets.id"), nullable=False),
    Column("device_id", UUID(as_uuid=True), ForeignKey("devices.id"), nullable=False),
    Column("kid", String(8), ForeignKey("issuer_keys.kid"), nullable=False),
    Column("credential", LargeBinary, nullable=False),
    Column("issuer_signature", LargeBinary(64), nullable=False),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("valid_until", DateTime(timezone=True), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Index("credentials_ticket_device", "ticket_id", "device_id", "issued_at"),
    Index("credentials_kid_until", "kid", "valid_until"),
    Index("credentials_device_until", "device_id", "valid_until"),
)
