"""Lane claims as one-row PL/pgSQL functions, without nested set-returning calls.

`lane_claim_key` and `lane_exit_claim` (parking_0003) return sets: every call filled a tuple
store, and an exit's claim went through three nested PL/pgSQL calls (`lane_exit_claim` →
`lane_claim_key`, `lane_open_session`), each materialising its rows. `lane_key` and
`lane_exit_begin` do the same steps in the same order (the key's session-level advisory lock,
then the stored answer read with a fresh snapshot; at an exit, the open session found, its lock
taken, the row read again) and return their one row through OUT parameters.

The functions of parking_0003 stay for code still running during a deploy; `lane_claim`
(parking_0002) has had no caller since parking_0003 and is dropped.

Revision ID: parking_0004
Revises: parking_0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "parking_0004"
down_revision = "parking_0003"
branch_labels = None
depends_on = None

FUNCTIONS = (
    # lane_claim_key in one row: a stored answer is returned even when the lock is not ours.
    """
    CREATE FUNCTION lane_key(
        p_lock bigint, p_scope text, p_key text,
        OUT claimed boolean, OUT fingerprint text, OUT status_code integer,
        OUT media_type text, OUT body bytea
    ) LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        claimed := pg_try_advisory_lock(p_lock);
        SELECT k.fingerprint, k.status_code, k.media_type, k.body
          INTO fingerprint, status_code, media_type, body
          FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
    END
    $$
    """,
    # lane_exit_claim in one row: the key, then (when it is ours and unanswered) the plate's
    # open session at the lot, locked and read again (it may have closed meanwhile).
    """
    CREATE FUNCTION lane_exit_begin(
        p_lock bigint, p_scope text, p_key text, p_lot text, p_plate text,
        OUT claimed boolean, OUT fingerprint text, OUT status_code integer,
        OUT media_type text, OUT body bytea, OUT session sessions
    ) LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        found uuid;
    BEGIN
        claimed := pg_try_advisory_lock(p_lock);
        SELECT k.fingerprint, k.status_code, k.media_type, k.body
          INTO fingerprint, status_code, media_type, body
          FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
        IF NOT claimed OR body IS NOT NULL OR p_plate IS NULL THEN
            RETURN;
        END IF;
        SELECT s.session_id INTO found FROM sessions s
         WHERE s.lot_id = p_lot AND s.plate_key = p_plate AND s.status <> 'closed';
        IF found IS NULL THEN
            RETURN;
        END IF;
        PERFORM pg_advisory_lock(session_lock(found));
        SELECT * INTO session FROM sessions s
         WHERE s.session_id = found AND s.status <> 'closed';
    END
    $$
    """,
)


def upgrade() -> None:
    op.execute("DROP FUNCTION lane_claim(bigint, text, text)")
    for function in FUNCTIONS:
        op.execute(function)


def downgrade() -> None:
    op.execute("DROP FUNCTION lane_exit_begin(bigint, text, text, text, text)")
    op.execute("DROP FUNCTION lane_key(bigint, text, text)")
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
