"""Initial parking schema: kit tables, lots, lanes, devices, dated tariffs, vehicles, sessions,
the money seen for them, overrides and disputes.

Revision ID: parking_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from shared.migrations import create_kit_tables

revision = "parking_0001"
down_revision = None
branch_labels = None
depends_on = None

VEHICLE_TYPES = "('motorbike', 'car')"

# The city-wide tariffs in force since 2024-01-01 (Hanoi's 2018 street-parking decision), as
# services.parking.tariffs.DEFAULT_TARIFFS had them when this revision was written: reference
# data every deployment needs, frozen here. Later changes are new dated versions (POST /v1/tariffs).
CITY_TARIFFS = (
    {
        "tariff_id": "hn-2024-car",
        "vehicle_type": "car",
        "first_block_minutes": 120,
        "first_block_price": 25_000,
        "per_hour_price": 15_000,
        "night_turn_price": 100_000,
        "grace_minutes": 15,
        "daily_cap": 200_000,
    },
    {
        "tariff_id": "hn-2024-motorbike",
        "vehicle_type": "motorbike",
        "first_block_minutes": 720,
        "first_block_price": 5_000,
        "per_hour_price": 0,
        "night_turn_price": 8_000,
        "grace_minutes": 10,
        "daily_cap": 10_000,
    },
)
CITY_TARIFFS_FROM = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=7)))


def _created_at(name: str = "created_at") -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    create_kit_tables()
    op.create_table(
        "lots",
        sa.Column("lot_id", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("district", sa.String(60), nullable=False),
        sa.Column("address", sa.String(200), nullable=False),
        sa.Column("motorbike_capacity", sa.Integer, nullable=False),
        sa.Column("car_capacity", sa.Integer, nullable=False),
        sa.CheckConstraint("motorbike_capacity >= 0 AND car_capacity >= 0", name="capacity"),
    )
    op.create_table(
        "lanes",
        sa.Column("lane_id", sa.String(30), primary_key=True),
        sa.Column("lot_id", sa.String(20), sa.ForeignKey("lots.lot_id"), nullable=False),
        sa.Column("direction", sa.String(5), nullable=False),
        sa.Column("vehicle_type", sa.String(10)),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default="true"),
        sa.CheckConstraint("direction IN ('entry', 'exit')", name="lane_direction"),
        sa.CheckConstraint(f"vehicle_type IN {VEHICLE_TYPES}", name="lane_vehicle_type"),
    )
    op.create_index("lanes_by_lot", "lanes", ["lot_id"])
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("lot_id", sa.String(20), sa.ForeignKey("lots.lot_id"), nullable=False),
        sa.Column("lane_id", sa.String(30), sa.ForeignKey("lanes.lane_id")),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default="true"),
        _created_at(),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("kind IN ('lane_terminal', 'camera')", name="device_kind"),
    )
    op.create_table(
        "tariffs",
        sa.Column("tariff_id", sa.String(60), primary_key=True),
        sa.Column("vehicle_type", sa.String(10), nullable=False),
        sa.Column("lot_id", sa.String(20), sa.ForeignKey("lots.lot_id")),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_block_minutes", sa.Integer, nullable=False),
        sa.Column("first_block_price", sa.BigInteger, nullable=False),
        sa.Column("per_hour_price", sa.BigInteger, nullable=False),
        sa.Column("night_turn_price", sa.BigInteger, nullable=False),
        sa.Column("grace_minutes", sa.Integer, nullable=False),
        sa.Column("daily_cap", sa.BigInteger),
        sa.Column("day_starts_at", sa.Time, nullable=False),
        sa.Column("day_ends_at", sa.Time, nullable=False),
        _created_at(),
        sa.UniqueConstraint(
            "vehicle_type",
            "lot_id",
            "effective_from",
            name="tariffs_one_version_per_instant",
            postgresql_nulls_not_distinct=True,
        ),
        sa.CheckConstraint(f"vehicle_type IN {VEHICLE_TYPES}", name="tariff_vehicle_type"),
        sa.CheckConstraint(
            "first_block_minutes > 0 AND first_block_price >= 0 AND per_hour_price >= 0"
            " AND night_turn_price >= 0 AND grace_minutes >= 0"
            " AND (daily_cap IS NULL OR daily_cap >= 0) AND day_starts_at < day_ends_at",
            name="tariff_amounts",
        ),
    )
    tariffs = sa.table(
        "tariffs",
        *(
            sa.column(name)
            for name in (
                *CITY_TARIFFS[0],
                "lot_id",
                "effective_from",
                "day_starts_at",
                "day_ends_at",
            )
        ),
    )
    op.bulk_insert(
        tariffs,
        [
            {
                **tariff,
                "lot_id": None,
                "effective_from": CITY_TARIFFS_FROM,
                "day_starts_at": time(6),
                "day_ends_at": time(18),
            }
            for tariff in CITY_TARIFFS
        ],
    )
    op.create_table(
        "vehicles",
        sa.Column("vehicle_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("plate_key", sa.String(20), nullable=False, unique=True),
        sa.Column("plate", sa.String(20), nullable=False),
        sa.Column("vehicle_type", sa.String(10), nullable=False),
        sa.Column("owner_id", sa.String(100), nullable=False),
        sa.Column("wallet_account_id", UUID(as_uuid=True), nullable=False),
        sa.Column("rfid_tag", sa.String(64), unique=True),
        _created_at("registered_at"),
        sa.CheckConstraint(f"vehicle_type IN {VEHICLE_TYPES}", name="vehicle_type"),
    )
    op.create_table(
        "sessions",
        sa.Column("session_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("lot_id", sa.String(20), sa.ForeignKey("lots.lot_id"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("vehicle_type", sa.String(10), nullable=False),
        sa.Column("plate_key", sa.String(20), nullable=False),
        sa.Column("plate", sa.String(20), nullable=False),
        sa.Column("entry_method", sa.String(12), nullable=False),
        sa.Column("entry_lane_id", sa.String(30), nullable=False),
        sa.Column("entry_device_id", sa.String(40)),
        sa.Column("entry_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry_recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry_confidence", sa.Float),
        sa.Column("entry_image_ref", sa.String(200)),
        sa.Column("vehicle_id", UUID(as_uuid=True)),
        sa.Column("wallet_account_id", UUID(as_uuid=True)),
        sa.Column("hold_id", UUID(as_uuid=True)),
        sa.Column("hold_amount", sa.BigInteger),
        sa.Column("hold_status", sa.String(24)),
        sa.Column("review_reasons", ARRAY(sa.String(40)), nullable=False, server_default="{}"),
        sa.Column("exit_lane_id", sa.String(30)),
        sa.Column("exit_device_id", sa.String(40)),
        sa.Column("exit_at", sa.DateTime(timezone=True)),
        sa.Column("exit_recorded_at", sa.DateTime(timezone=True)),
        sa.Column("exit_confidence", sa.Float),
        sa.Column("exit_image_ref", sa.String(200)),
        sa.Column("exit_offline", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("fee", sa.BigInteger),
        sa.Column("priced", JSONB),
        sa.Column("settlement", sa.String(10)),
        sa.Column("paid_amount", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("debt_status", sa.String(12)),
        sa.Column("debt_next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("payment_request_id", UUID(as_uuid=True)),
        sa.Column("payment_reference", sa.String(25)),
        sa.Column("payment_qr", sa.String(512)),
        sa.Column("payment_amount", sa.BigInteger),
        sa.Column("payment_requested_at", sa.DateTime(timezone=True)),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        _created_at("updated_at"),
        sa.CheckConstraint(
            "status IN ('open', 'awaiting_payment', 'closed')", name="session_status"
        ),
        sa.CheckConstraint(f"vehicle_type IN {VEHICLE_TYPES}", name="session_vehicle_type"),
        sa.CheckConstraint(
            "settlement IN ('free', 'wallet', 'vietqr', 'debt', 'waived')",
            name="session_settlement",
        ),
        sa.CheckConstraint("debt_status IN ('outstanding', 'paid')", name="session_debt"),
        sa.CheckConstraint("exit_at IS NULL OR exit_at >= entry_at", name="session_times"),
        sa.CheckConstraint("fee IS NULL OR fee >= 0", name="session_fee"),
        sa.CheckConstraint(
            "status <> 'closed' OR (exit_at IS NOT NULL AND fee IS NOT NULL"
            " AND settlement IS NOT NULL)",
            name="session_closed_is_settled",
        ),
    )
    op.create_index(
        "sessions_one_open_per_plate",
        "sessions",
        ["lot_id", "plate_key"],
        unique=True,
        postgresql_where=sa.text("status <> 'closed'"),
    )
    op.create_index("sessions_by_lot_exit", "sessions", ["lot_id", "exit_at"])
    op.create_index("sessions_by_plate_entry", "sessions", ["plate_key", "entry_at"])
    op.create_index("sessions_by_payment_request", "sessions", ["payment_request_id"])
    op.create_index(
        "sessions_holds_to_release",
        "sessions",
        ["session_id"],
        postgresql_where=sa.text("hold_status = 'release_pending'"),
    )
    op.create_index(
        "sessions_debts",
        "sessions",
        ["debt_next_attempt_at"],
        postgresql_where=sa.text("debt_status = 'outstanding'"),
    )
    op.create_table(
        "session_payments",
        sa.Column("transfer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "session_id", UUID(as_uuid=True), sa.ForeignKey("sessions.session_id"), nullable=False
        ),
        sa.Column("lot_id", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.String(64)),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('capture', 'charge', 'vietqr', 'refund')", name="session_payment_kind"
        ),
    )
    op.create_index("session_payments_by_session", "session_payments", ["session_id"])
    op.create_table(
        "ledger_transfers",
        sa.Column("transfer_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("lot_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("hold_id", UUID(as_uuid=True)),
        sa.Column("payment_request_id", UUID(as_uuid=True)),
        sa.Column("original_transfer_id", UUID(as_uuid=True)),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ledger_transfers_by_lot_time", "ledger_transfers", ["lot_id", "posted_at"])
    op.create_table(
        "overrides",
        sa.Column("override_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "session_id", UUID(as_uuid=True), sa.ForeignKey("sessions.session_id"), nullable=False
        ),
        sa.Column("lot_id", sa.String(20), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("operator", sa.String(60), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("fee_before", sa.BigInteger),
        sa.Column("fee_after", sa.BigInteger),
        sa.Column("refund_amount", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("refund_status", sa.String(20)),
        sa.Column("details", JSONB, nullable=False, server_default="{}"),
        _created_at(),
    )
    op.create_index("overrides_by_lot_time", "overrides", ["lot_id", "created_at"])
    op.create_index("overrides_by_session", "overrides", ["session_id"])
    op.create_table(
        "disputes",
        sa.Column("dispute_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "session_id", UUID(as_uuid=True), sa.ForeignKey("sessions.session_id"), nullable=False
        ),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("claimed_entry_at", sa.DateTime(timezone=True)),
        sa.Column("claimed_exit_at", sa.DateTime(timezone=True)),
        _created_at(),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolution_note", sa.String(500)),
        sa.Column("override_id", UUID(as_uuid=True), sa.ForeignKey("overrides.override_id")),
        sa.CheckConstraint("status IN ('open', 'accepted', 'rejected')", name="dispute_status"),
    )
    op.create_index(
        "disputes_one_open_per_session",
        "disputes",
        ["session_id"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    for table in (
        "disputes",
        "overrides",
        "ledger_transfers",
        "session_payments",
        "sessions",
        "vehicles",
        "tariffs",
        "devices",
        "lanes",
        "lots",
    ):
        op.drop_table(table)
