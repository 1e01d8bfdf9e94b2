"""Initial ticketing schema: kit tables, fare products, riders, devices, purchases, tickets,
issuer keys and credentials.

Revision ID: ticketing_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

from shared.migrations import create_kit_tables

revision = "ticketing_0001"
down_revision = None
branch_labels = None
depends_on = None


def _at(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def create_products_table() -> None:
    """The product catalogue, until ticketing_0003 made it the feed's (its downgrade calls this)."""
    op.create_table(
        "products",
        sa.Column("code", sa.String(40), primary_key=True),
        sa.Column("name_vi", sa.String(120), nullable=False),
        sa.Column("name_en", sa.String(120), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("price_vnd", sa.Integer, nullable=False),
        sa.Column("categories", sa.ARRAY(sa.String(20)), nullable=False),
        sa.Column("validity_days", sa.Integer),
        sa.Column("rides", sa.Integer),
        sa.Column("lines", sa.ARRAY(sa.String(10)), nullable=False),
        sa.Column("distance_priced", sa.Boolean, nullable=False),
        sa.Column("line_choice", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("credential_code", sa.String(8), nullable=False, unique=True),
        sa.CheckConstraint("price_vnd >= 0", name="price_not_negative"),
    )


def upgrade() -> None:
    create_kit_tables()
    create_products_table()
    op.create_table(
        "riders",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("phone", sa.String(16), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("requested_category", sa.String(20)),
        sa.Column("category_status", sa.String(10), nullable=False),
        sa.Column("category_note", sa.String(200)),
        sa.Column("wallet_account_id", UUID(as_uuid=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("rider_id", UUID(as_uuid=True), sa.ForeignKey("riders.id"), nullable=False),
        sa.Column("family_id", UUID(as_uuid=True), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
        _at("created_at", nullable=False),
        _at("expires_at", nullable=False),
        _at("used_at"),
        _at("revoked_at"),
    )
    op.create_index("refresh_tokens_family", "refresh_tokens", ["family_id"])
    op.create_table(
        "devices",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("rider_id", UUID(as_uuid=True), sa.ForeignKey("riders.id"), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("label", sa.String(60)),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("is_switch", sa.Boolean, nullable=False),
        _at("created_at", nullable=False),
        _at("revoked_at"),
        sa.Column("revoke_reason", sa.String(200)),
        sa.CheckConstraint("status IN ('active', 'revoked')", name="device_status"),
    )
    op.create_index("devices_rider", "devices", ["rider_id", "created_at"])
    op.create_index("devices_fingerprint", "devices", ["fingerprint"])
    op.create_index(
        "devices_one_active_per_rider",
        "devices",
        ["rider_id"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "purchases",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("rider_id", UUID(as_uuid=True), sa.ForeignKey("riders.id"), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("product_code", sa.String(40), nullable=False),
        sa.Column("line", sa.String(10)),
        sa.Column("price_vnd", sa.Integer, nullable=False),
        sa.Column("rider_category", sa.String(20), nullable=False),
        sa.Column("wallet_account_id", UUID(as_uuid=True)),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("charge_id", UUID(as_uuid=True)),
        sa.Column("refund_id", UUID(as_uuid=True)),
        sa.Column("failure_code", sa.String(60)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _at("next_attempt_at", nullable=False),
        _at("created_at", nullable=False),
        _at("completed_at"),
        sa.CheckConstraint("price_vnd >= 0", name="purchase_price_not_negative"),
        sa.CheckConstraint(
            "status IN ('pending', 'completed', 'failed', 'cancelling', 'cancelled')",
            name="purchase_status",
        ),
    )
    op.create_index(
        "purchases_rider_key", "purchases", ["rider_id", "idempotency_key"], unique=True
    )
    op.create_index(
        "purchases_unresolved",
        "purchases",
        ["next_attempt_at"],
        postgresql_where=sa.text("status IN ('pending', 'cancelling')"),
    )
    op.create_table(
        "tickets",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("purchase_id", UUID(as_uuid=True), sa.ForeignKey("purchases.id"), unique=True),
        sa.Column("rider_id", UUID(as_uuid=True), sa.ForeignKey("riders.id"), nullable=False),
        sa.Column("product_code", sa.String(40), nullable=False),
        sa.Column("credential_code", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("rider_category", sa.String(20), nullable=False),
        sa.Column("rides", sa.Integer),
        sa.Column("lines", sa.ARRAY(sa.String(10)), nullable=False),
        _at("valid_from", nullable=False),
        _at("valid_until", nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        _at("created_at", nullable=False),
        _at("revoked_at"),
        sa.Column("revoke_reason", sa.String(200)),
        sa.CheckConstraint("valid_until >= valid_from", name="ticket_validity"),
    )
    op.create_index("tickets_rider", "tickets", ["rider_id", "created_at"])
    op.create_table(
        "issuer_keys",
        sa.Column("kid", sa.String(8), primary_key=True),
        sa.Column("sequence", sa.Integer, nullable=False, unique=True),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("private_key_wrapped", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        _at("created_at", nullable=False),
        _at("retiring_at"),
        _at("not_after"),
        _at("retired_at"),
        sa.CheckConstraint("status IN ('active', 'retiring', 'retired')", name="key_status"),
    )
    op.create_index(
        "issuer_keys_one_active",
        "issuer_keys",
        ["status"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "credentials",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("ticket_id", UUID(as_uuid=True), sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("device_id", UUID(as_uuid=True), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("kid", sa.String(8), sa.ForeignKey("issuer_keys.kid"), nullable=False),
        sa.Column("credential", sa.LargeBinary, nullable=False),
        sa.Column("issuer_signature", sa.LargeBinary(64), nullable=False),
        _at("valid_from", nullable=False),
        _at("valid_until", nullable=False),
        _at("issued_at", nullable=False),
    )
    op.create_index(
        "credentials_ticket_device", "credentials", ["ticket_id", "device_id", "issued_at"]
    )
    op.create_index("credentials_kid_until", "credentials", ["kid", "valid_until"])
    op.create_index("credentials_device_until", "credentials", ["device_id", "valid_until"])


def downgrade() -> None:
    for table in (
        "credentials",
        "issuer_keys",
        "tickets",
        "purchases",
        "devices",
        "refresh_tokens",
        "riders",
        "products",
    ):
        op.drop_table(table)
