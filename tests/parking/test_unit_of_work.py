"""The session state, the table and the lane statements name the same columns."""

from __future__ import annotations

from services.parking import lane_sql
from services.parking.repository import sessions
from services.parking.session_state import SESSION_FIELDS


class TestSessionState:
    def test_it_has_every_column_of_the_sessions_table_in_order(self) -> None:
        assert tuple(column.name for column in sessions.c) == SESSION_FIELDS

    def test_a_lane_decision_writes_only_columns_it_has(self) -> None:
        assert set(lane_sql.SESSION_COLUMNS) <= set(SESSION_FIELDS)
        assert set(lane_sql.UPDATABLE_COLUMNS) <= set(SESSION_FIELDS)
        assert len(set(lane_sql.UPDATABLE_COLUMNS)) == len(lane_sql.UPDATABLE_COLUMNS)
