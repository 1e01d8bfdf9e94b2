"""Pure rules: what ticketing's key list means to a gate, fares, line scopes, display text."""

from __future__ import annotations

import base64

import orjson
import pytest

from services.validation.rules import (
    Action,
    Direction,
    FareTable,
    GatePlace,
    Reason,
    display,
    line_allowed,
)
from services.validation.tasks import key_records
from tests.validation.conftest import HANOI_FARES

KEY = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()


class TestTicketingKeySet:
    def test_statuses_and_expiry_are_kept(self) -> None:
        answer = {
            "keys": [
                {
                    "kid": "k2",
                    "algorithm": "Ed25519",
                    "public_key": KEY,
                    "status": "active",
                    "created_at": "2026-01-01T00:00:00Z",
                    "not_after": None,
                    "retired_at": None,
                },
                {
                    "kid": "k1",
                    "algorithm": "Ed25519",
                    "public_key": KEY,
                    "status": "retiring",
                    "created_at": "2025-01-01T00:00:00Z",
                    "not_after": "2026-02-01T00:00:00Z",
                    "retired_at": None,
                },
            ]
        }

        records = key_records(answer)

        assert records["k2"]["status"] == "active"
        assert records["k1"] == {
            "public_key": KEY,
            "status": "retiring",
            "not_after": 1_769_904_000,
            "source": "ticketing",
        }

    def test_unusable_entries_are_dropped_or_distrusted(self) -> None:
        answer = [
            {"kid": "bad", "public_key": "not base64!"},
            {"public_key": KEY},
            {"kid": "odd", "public_key": KEY, "status": "mystery"},
        ]

        assert key_records(answer) == {
            "odd": {
                "public_key": KEY,
                "status": "retired",
                "not_after": None,
                "source": "ticketing",
            }
        }


METRO = GatePlace("G", "2A-03", None, Direction.entry)
BUS = GatePlace("B", None, "86", Direction.both)


class TestLines:
    @pytest.mark.parametrize(
        ("lines", "gate", "allowed"),
        [
            (("*",), METRO, True),
            (("METRO",), METRO, True),
            (("METRO",), BUS, False),
            (("BUS",), BUS, True),
            (("2A",), METRO, True),
            (("3",), METRO, False),
            (("86", "09"), BUS, True),
            (("09",), BUS, False),
        ],
    )
    def test_scope(self, lines: tuple[str, ...], gate: GatePlace, allowed: bool) -> None:
        assert line_allowed(lines, gate, HANOI_FARES.line_of(gate.station)) is allowed


class TestFares:
    def test_same_line_is_the_distance_fare(self) -> None:
        assert HANOI_FARES.trip_fare("2A-01", "2A-12") == 16_000  # 13 km: 8,000 + 8 × 1,000
        assert HANOI_FARES.trip_fare("2A-05", "2A-05") == 8_000
        assert HANOI_FARES.trip_fare("2A-01", "2A-09") == 13_000  # 9.2 km

    def test_across_lines_or_unknown_is_the_feeds_fallback(self) -> None:
        assert HANOI_FARES.trip_fare("2A-01", "3-08") == 16_000
        assert HANOI_FARES.trip_fare("9Z-01", "2A-01") == 16_000

    def test_a_trip_left_open_pays_its_lines_highest_fare(self) -> None:
        assert HANOI_FARES.max_trip_fare("2A-05") == 16_000
        assert HANOI_FARES.max_trip_fare("3-02") == 12_000  # 8.5 km end to end

    def test_bus_fares_by_the_routes_network(self) -> None:
        assert HANOI_FARES.bus == {"01": 10_000, "09": 8_000, "32": 10_000, "86": 20_000}

    def test_a_bundle_carries_the_same_table(self) -> None:
        bundled = orjson.loads(orjson.dumps(HANOI_FARES.bundled()))
        assert FareTable.from_bundle(bundled) == HANOI_FARES


class TestDisplay:
    def test_accept_shows_fare_and_rides_in_both_languages(self) -> None:
        assert display(Reason.ok, Action.exit, fare=13_000) == (
            "Tạm biệt · Cước 13.000 đ",
            "Goodbye · Fare 13,000 VND",
        )
        assert display(Reason.ok, Action.entry, rides_left=2)[1] == "Welcome · 2 rides left"

    def test_every_reason_has_a_message(self) -> None:
        for reason in Reason:
            vi, en = display(reason, Action.none)
            assert vi
            assert en
