"""Lane decisions in autocommit: two round trips on the critical path instead of four.

A lane decision no longer holds a transaction open while it asks Redis and payments. Its first
statement takes session-level advisory locks (the Idempotency-Key's; at an exit, the session's)
and its last statement writes everything at once and commits on its own; the locks are let go
right after, off the lane's critical path. Whatever else writes an open session takes the same
session lock (`session_lock`) inside its transaction, as the row lock did before.

Also: what a plate owes is found without reading its every session (entries show it).

Revision ID: parking_0003
Revises: parking_0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "parking_0003"
down_revision = "parking_0002"
branch_labels = None
depends_on = None

FUNCTIONS = (
    # The advisory lock of one session (the single-bigint key space, as Idempotency-Keys').
    """
    CREATE FUNCTION session_lock(p_session uuid) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT hashtextextended('parking-session:' || p_session::text, 0)
    $$
    """,
    # lane_claim with a session-level lock, which outlives the statement (autocommit) and is let
    # go a moment after the answer commits: a stored answer is returned even when the lock is
    # not ours yet, so a retry right after the answer gets its replay, never a 409.
    """
    CREATE FUNCTION lane_claim_key(p_lock bigint, p_scope text, p_key text)
    RETURNS TABLE (
        claimed boolean, fingerprint text, status_code integer, media_type text, body bytea
    )
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        locked boolean := pg_try_advisory_lock(p_lock);
    BEGIN
        RETURN QUERY
            SELECT locked, k.fingerprint::text, k.status_code, k.media_type::text, k.body
              FROM (SELECT 1) AS one
              LEFT JOIN idempotency_keys k ON k.scope = p_scope AND k.key = p_key;
    END
    $$
    """,
    # A session, read once its lock is ours (waits for whoever holds it).
    """
    CREATE FUNCTION lane_lock_session(p_session uuid) RETURNS SETOF sessions
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        PERFORM pg_advisory_lock(session_lock(p_session));
        RETURN QUERY SELECT * FROM sessions s WHERE s.session_id = p_session;
    END
    $$
    """,
    # The plate's open session at the lot, locked and read again (it may have closed meanwhile).
    """
    CREATE FUNCTION lane_open_session(p_lot text, p_plate text) RETURNS SETOF sessions
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        found uuid;
    BEGIN
        SELECT s.session_id INTO found FROM sessions s
         WHERE s.lot_id = p_lot AND s.plate_key = p_plate AND s.status <> 'closed';
        IF found IS NULL THEN
            RETURN;
        END IF;
        PERFORM pg_advisory_lock(session_lock(found));
        RETURN QUERY SELECT * FROM sessions s WHERE s.session_id = found AND s.status <> 'closed';
    END
    $$
    """,
    # An exit's first statement: the key, then (when it is ours and unanswered) the session.
    """
    CREATE FUNCTION lane_exit_claim(
        p_lock bigint, p_scope text, p_key text, p_lot text, p_plate text
    )
    RETURNS TABLE (
        claimed boolean, fingerprint text, status_code integer, media_type text, body bytea,
        session sessions
    )
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        SELECT c.claimed, c.fingerprint, c.status_code, c.media_type, c.body
          INTO claimed, fingerprint, status_code, media_type, body
          FROM lane_claim_key(p_lock, p_scope, p_key) c;
        IF claimed AND body IS NULL AND p_plate IS NOT NULL THEN
            SELECT * INTO session FROM lane_open_session(p_lot, p_plate);
        END IF;
        RETURN NEXT;
    END
    $$
    """,
)


def upgrade() -> None:
    op.create_index(
        "sessions_debts_by_plate",
        "sessions",
        ["plate_key"],
        postgresql_where=sa.text("debt_status = 'outstanding'"),
    )
    for function in FUNCTIONS:
        op.execute(function)


def downgrade() -> None:
    for signature in (
        "lane_exit_claim(bigint, text, text, text, text)",
        "lane_open_session(text, text)",
        "lane_lock_session(uuid)",
        "lane_claim_key(bigint, text, text)",
        "session_lock(uuid)",
    ):
        op.execute(f"DROP FUNCTION {signature}")
    op.drop_index("sessions_debts_by_plate", "sessions")
