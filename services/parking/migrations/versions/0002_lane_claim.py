"""Lane decisions claim their Idempotency-Key and read what they decide on in one round trip.

`lane_claim` takes the key's transaction-scoped advisory lock and then reads the stored answer,
in that order and with a fresh snapshot (a PL/pgSQL statement sees what committed before it
ran): a plain SELECT taking the lock would read the key with the snapshot of its start and
could miss the answer of a first request that committed in between.

Revision ID: parking_0002
Revises: parking_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "parking_0002"
down_revision = "parking_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION lane_claim(p_lock bigint, p_scope text, p_key text)
        RETURNS TABLE (
            claimed boolean, fingerprint text, status_code integer, media_type text, body bytea
        )
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF NOT pg_try_advisory_xact_lock(p_lock) THEN
                RETURN QUERY SELECT false, NULL::text, NULL::integer, NULL::text, NULL::bytea;
                RETURN;
            END IF;
            RETURN QUERY
                SELECT true, k.fingerprint::text, k.status_code, k.media_type::text, k.body
                  FROM (SELECT 1) AS one
                  LEFT JOIN idempotency_keys k ON k.scope = p_scope AND k.key = p_key;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION lane_claim(bigint, text, text)")
