"""SQL on plain asyncpg connections in autocommit: the lane decisions', and the ledger event's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson

from services.parking.session_state import SessionState
from shared.db import Database
from shared.events import Event

# Lane decisions ---------------------------------------------------------------------------------
#
# Entries and exits are the hot path: plain SQL on a connection of the asyncpg pool, in
# autocommit (asyncpg prepares each text once per connection and reuses it). The first
# statement claims the Idempotency-Key (`lane_key`, migration parking_0004: a session-level
# advisory lock, then the stored answer with a fresh snapshot) and reads what the decision
# needs; an exit's also locks its session (`lane_exit_begin`). The last statement
# writes the session, the payment seen, the outbox events and the answer, and commits them
# together; the locks are let go after it (`LaneConnection.close`), off the critical path.

# The key's claim as the kit's `idempotent_outcome` (shared.idempotency.guarded_answer reads
# it): NULL when the key is ours and unanswered, else replay, reused or in_flight. $4 is the
# request's fingerprint.
_CLAIM = """
    CASE WHEN c.body IS NOT NULL THEN
              CASE WHEN c.fingerprint = $4 THEN 'replay' ELSE 'reused' END
         WHEN NOT c.claimed THEN 'in_flight'
    END AS outcome,
    c.status_code, c.media_type, c.body, NULL::jsonb AS detail
"""
_FRESH = "c.claimed AND c.body IS NULL"  # the key is ours and has no answer yet

ENTRY_BEGIN = f"""
SELECT {_CLAIM}, s.session_id AS open_session_id,
       v.vehicle_id, v.wallet_account_id, v.vehicle_type, d.owed AS outstanding_debt
  FROM lane_key($1, $2, $3) c
  LEFT JOIN sessions s
    ON {_FRESH} AND s.lot_id = $5 AND s.plate_key = $6 AND s.status <> 'closed'
  LEFT JOIN vehicles v ON {_FRESH} AND v.plate_key = $6
  LEFT JOIN LATERAL (
      SELECT coalesce(sum(o.fee - o.paid_amount), 0)::bigint AS owed FROM sessions o
       WHERE {_FRESH} AND o.plate_key = $6 AND o.debt_status = 'outstanding'
  ) d ON true
"""

EXIT_BEGIN = f"""
SELECT {_CLAIM}, c.session FROM lane_exit_begin($1, $2, $3, $5, $6) c
"""

PLATE_AT_LOT = """
SELECT s.session_id AS open_session_id, v.vehicle_id, v.wallet_account_id, v.vehicle_type,
       (SELECT coalesce(sum(o.fee - o.paid_amount), 0)::bigint FROM sessions o
         WHERE o.plate_key = $2 AND o.debt_status = 'outstanding') AS outstanding_debt
  FROM (SELECT 1) AS one
  LEFT JOIN sessions s ON s.lot_id = $1 AND s.plate_key = $2 AND s.status <> 'closed'
  LEFT JOIN vehicles v ON v.plate_key = $2
"""

VEHICLE_BY_ID = "SELECT * FROM vehicles WHERE vehicle_id = $1"
VEHICLE_BY_RFID = "SELECT * FROM vehicles WHERE rfid_tag = $1"
LOCK_SESSION = "SELECT * FROM lane_lock_session($1)"
LOCK_OPEN_SESSION = "SELECT * FROM lane_open_session($1, $2)"
LAST_EXIT_FOR_PLATE = """
SELECT session_id, exit_at FROM sessions
 WHERE lot_id = $1 AND plate_key = $2 AND status = 'closed' AND exit_recorded_at >= $3
 ORDER BY exit_recorded_at DESC LIMIT 1
"""

# $1-$5: the events (ids, topics, keys, headers as JSON, payloads); $6-$9: the answer's key,
# scope, fingerprint and body. `gate`: the row without which nothing is written. The outcome
# is the kit's `idempotent_outcome`: created, or `already_inside` when nothing was written.
_EVENTS_AND_ANSWER = """
events AS (
    INSERT INTO outbox (event_id, topic, key, headers, payload)
    SELECT e.event_id::uuid, e.topic, e.key, e.headers::jsonb, e.payload
      FROM gate, unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])
           AS e(event_id, topic, key, headers, payload)
),
answer AS (
    INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, media_type, body)
    SELECT $6, $7, $8, 200, 'application/json', $9 FROM gate
)
SELECT CASE WHEN count(*) > 0 THEN 'created' ELSE 'already_inside' END AS outcome,
       200 AS status_code, 'application/json' AS media_type, $9::bytea AS body,
       NULL::jsonb AS detail
  FROM gate
"""

STORE_ANSWER = f"WITH gate AS (SELECT 1), {_EVENTS_AND_ANSWER}"

SESSION_COLUMNS = (
    "session_id",
    "lot_id",
    "status",
    "vehicle_type",
    "plate_key",
    "plate",
    "entry_method",
    "entry_lane_id",
    "entry_device_id",
    "entry_at",
    "entry_recorded_at",
    "entry_confidence",
    "entry_image_ref",
    "vehicle_id",
    "wallet_account_id",
    "hold_id",
    "hold_amount",
    "hold_status",
    "review_reasons",
)
_NEW_SESSION = ", ".join(SESSION_COLUMNS)
_NEW_VALUES = ", ".join(f"${n}" for n in range(10, 10 + len(SESSION_COLUMNS)))

# Nothing is written when the plate entered through another lane at the same moment.
INSERT_SESSION = f"""
WITH gate AS (
    INSERT INTO sessions ({_NEW_SESSION}) VALUES ({_NEW_VALUES})
    ON CONFLICT (lot_id, plate_key) WHERE status <> 'closed' DO NOTHING
    RETURNING session_id
),
{_EVENTS_AND_ANSWER}
"""

# What a decision may change on a session, in this order from $11 (see `session_changes`).
UPDATABLE_COLUMNS = (
    "status",
    "plate",
    "plate_key",
    "exit_lane_id",
    "exit_device_id",
    "exit_at",
    "exit_recorded_at",
    "exit_confidence",
    "exit_image_ref",
    "exit_offline",
    "fee",
    "priced",
    "review_reasons",
    "settlement",
    "paid_amount",
    "hold_status",
    "debt_status",
    "debt_next_attempt_at",
    "payment_request_id",
    "payment_reference",
    "payment_qr",
    "payment_amount",
    "payment_requested_at",
    "closed_at",
    "entry_at",  # an operator's correction
)
_SETS = ",\n        ".join(
    f"{name} = ${n}::text::jsonb" if name == "priced" else f"{name} = ${n}"
    for n, name in enumerate(UPDATABLE_COLUMNS, 11)
)
_PAYMENT = 11 + len(UPDATABLE_COLUMNS)  # transfer id, kind, amount, reference, posted at

# $10: the session; a payment seen for it is recorded once (`record_payment`).
UPDATE_SESSION = f"""
WITH gate AS (
    UPDATE sessions SET
        {_SETS},
        updated_at = now()
     WHERE session_id = $10
    RETURNING session_id, lot_id
),
payment AS (
    INSERT INTO session_payments
        (transfer_id, session_id, lot_id, kind, amount, reference, posted_at)
    SELECT ${_PAYMENT}, gate.session_id, gate.lot_id, ${_PAYMENT + 1}, ${_PAYMENT + 2},
           ${_PAYMENT + 3}, ${_PAYMENT + 4}
      FROM gate WHERE ${_PAYMENT}::uuid IS NOT NULL
    ON CONFLICT DO NOTHING
),
{_EVENTS_AND_ANSWER}
"""


def outbox_arrays(
    events: Sequence[tuple[str, str, Event]],
) -> tuple[list[str], list[str], list[str], list[str], list[bytes]]:
    """Outbox rows as the five arrays the lane statements take (as `add_event` writes them)."""
    return (
        [event.id for _, _, event in events],
        [topic for topic, _, _ in events],
        [key for _, key, _ in events],
        [
            orjson.dumps([[name, value.decode()] for name, value in event.headers()]).decode()
            for _, _, event in events
        ],
        [event.value() for _, _, event in events],
    )


def updatable_values(state: SessionState) -> list[Any]:
    values = [getattr(state, name) for name in UPDATABLE_COLUMNS]
    priced = state.priced
    values[_PRICED] = None if priced is None else orjson.dumps(priced).decode()
    return values


_PRICED = UPDATABLE_COLUMNS.index("priced")


async def lane_outstanding_debt(connection: Any, plate_key: str) -> int:
    owed = await connection.fetchval(
        "SELECT coalesce(sum(fee - paid_amount), 0)::bigint FROM sessions"
        " WHERE plate_key = $1 AND debt_status = 'outstanding'",
        plate_key,
    )
    return int(owed)


@asynccontextmanager
async def raw_connection(database: Database) -> AsyncIterator[Any]:
    """A connection of the service's plain asyncpg pool (`Database.raw_pool`), in autocommit:
    each statement commits on its own."""
    pool = await database.raw_pool()
    async with pool.acquire() as connection:
        yield connection


UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"


class LaneConnection:
    """A lane decision's connection: its statements commit one by one, and the advisory locks
    they take (session-level) are let go by `close` before it goes back to the pool."""

    def __init__(self, pool: Any, connection: Any) -> None:
        self.pool = pool
        self.connection = connection

    @classmethod
    async def open(cls, database: Database) -> LaneConnection:
        pool = await database.raw_pool()
        return cls(pool, await pool.acquire())

    async def close(self) -> None:
        try:
            # fetchval, not execute: a prepared statement (execute without arguments would be
            # parsed and planned by PostgreSQL every time, ~45 µs of its CPU per decision).
            await self.connection.fetchval(UNLOCK_ALL)
        except BaseException:
            self.connection.terminate()  # its locks end with it
            raise
        finally:
            await self.pool.release(self.connection)

    def close_soon(self) -> None:
        """`close` after the lane has its answer: the locks outlive the commit by a moment."""
        task = asyncio.get_running_loop().create_task(self.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


# The ledger transfer and its event id, once: a redelivered event writes nothing.
RECORD_LEDGER_EVENT = """
WITH first AS (
    INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2::uuid)
    ON CONFLICT DO NOTHING RETURNING event_id
)
INSERT INTO ledger_transfers
    (transfer_id, lot_id, kind, amount, hold_id, payment_request_id, original_transfer_id,
     posted_at)
SELECT $3, $4, $5, $6, $7, $8, $9, $10 FROM first
ON CONFLICT DO NOTHING
"""


async def record_ledger_event(
    database: Database,
    consumer: str,
    event_id: str,
    *,
    transfer_id: uuid.UUID,
    lot_id: str,
    kind: str,
    amount: int,
    hold_id: uuid.UUID | None,
    payment_request_id: uuid.UUID | None,
    original_transfer_id: uuid.UUID | None,
    posted_at: datetime,
) -> None:
    async with raw_connection(database) as connection:
        await connection.execute(
            RECORD_LEDGER_EVENT,
            consumer,
            event_id,
            transfer_id,
            lot_id,
            kind,
            amount,
            hold_id,
            payment_request_id,
            original_transfer_id,
            posted_at,
        )
