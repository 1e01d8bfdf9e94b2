"""Hanoi's feed prices exactly what the Python tables price today (pure: no servers).

This test is what lets the Python tables (shared/network.py) go: every station pair and every
bus route must agree. The products are fixed expectations: what the Python catalogue sold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.validation.rules import bus_fare, trip_fare
from shared.fares.feed import HANOI, ProductSpec
from shared.fares.tariff import Leg
from shared.network import BUS_ROUTES, LINES, STATIONS
from tests.fares.support import TUESDAY_8AM, hanoi

FEED = hanoi()
PAYING = ("regular", "student", "worker")
CONCESSION = ("student", "worker")
FREE = ("elderly", "child", "merit", "disabled", "poor_household")
RUN_VALIDATOR = "import sys; from gtfs_validator.cli import main; sys.exit(main())"


def _by_code() -> dict[str, ProductSpec]:
    return {spec.code: spec for spec in FEED.products}


def metro_leg(entry: str, exit_: str) -> Leg:
    line = STATIONS[entry].line
    return Leg("leg", line, TUESDAY_8AM, TUESDAY_8AM + 1200, entry, exit_)


class TestPricesMatchToday:
    @pytest.mark.parametrize("category", PAYING)
    def test_every_metro_station_pair(self, category: str) -> None:
        pairs = [(a, b) for a in STATIONS for b in STATIONS]
        priced = {pair: FEED.tariff.price_leg(metro_leg(*pair), category).amount for pair in pairs}
        assert priced == {pair: trip_fare(*pair) for pair in pairs}

    @pytest.mark.parametrize("category", PAYING)
    def test_every_bus_route(self, category: str) -> None:
        for route in BUS_ROUTES:
            leg = Leg("leg", route.code, TUESDAY_8AM, TUESDAY_8AM)
            assert FEED.tariff.price_leg(leg, category).amount == bus_fare(route.code)

    def test_every_product_on_sale(self) -> None:
        """What ticketing sold from its Python catalogue before, plus the combined pass."""
        on_sale = {
            spec.code: (spec.kind, spec.mode, spec.price, spec.categories, spec.credential_code)
            for spec in FEED.products
        }
        assert on_sale == {
            "BUS-SINGLE-SHORT": ("single", "bus", 8_000, PAYING, "BSS"),
            "BUS-SINGLE-MEDIUM": ("single", "bus", 10_000, PAYING, "BSM"),
            "BUS-SINGLE-EXPRESS": ("single", "bus", 20_000, PAYING, "BSX"),
            "BUS-MONTH-ROUTE": ("pass", "bus", 140_000, ("regular",), "BMR"),
            "BUS-MONTH-ROUTE-C": ("pass", "bus", 70_000, CONCESSION, "BMRC"),
            "BUS-MONTH-ALL": ("pass", "bus", 280_000, ("regular",), "BMA"),
            "BUS-MONTH-ALL-C": ("pass", "bus", 140_000, CONCESSION, "BMAC"),
            "METRO-SINGLE": ("single", "metro", 0, PAYING, "MS"),
            "METRO-DAY": ("pass", "metro", 40_000, PAYING, "MD"),
            "METRO-WEEK": ("pass", "metro", 160_000, PAYING, "MW"),
            "METRO-MONTH": ("pass", "metro", 280_000, ("regular",), "MM"),
            "METRO-MONTH-C": ("pass", "metro", 140_000, CONCESSION, "MMC"),
            "STORED-VALUE": ("stored_value", "any", 0, PAYING, "SV"),
            "FREE-PASS": ("pass", "any", 0, FREE, "FP"),
            "BUSMETRO-MONTH": ("pass", "any", 470_000, ("regular",), "BMM"),
            "BUSMETRO-MONTH-C": ("pass", "any", 235_000, CONCESSION, "BMMC"),
        }

    def test_product_terms(self) -> None:
        terms = {
            spec.code: (spec.validity_days, spec.rides, spec.lines, spec.distance_priced)
            for spec in FEED.products
        }
        assert terms["BUS-SINGLE-SHORT"] == (1, 1, ("09",), False)
        assert terms["BUS-SINGLE-MEDIUM"] == (1, 1, ("01", "32"), False)
        assert terms["BUS-SINGLE-EXPRESS"] == (1, 1, ("86",), False)
        assert terms["METRO-SINGLE"] == (1, 1, (), True)
        assert terms["METRO-WEEK"] == (7, None, (), False)
        assert terms["STORED-VALUE"] == (365, None, (), True)
        assert {code for code, spec in _by_code().items() if spec.line_choice} == {
            "BUS-MONTH-ROUTE",
            "BUS-MONTH-ROUTE-C",
        }
        assert _by_code()["METRO-DAY"].name_en == "Metro day pass"
        assert _by_code()["METRO-DAY"].name_vi == "Vé ngày metro"

    def test_stations_and_distances(self) -> None:
        stops = FEED.stops_on_routes
        for line in LINES:
            for station in line.stations:
                stop = stops[station.code]
                assert (stop.name, stop.route_id, stop.km) == (station.name, line.code, station.km)

    def test_bus_route_lengths(self) -> None:
        lengths = {stop.route_id: stop.km for stop in FEED.stops_on_routes.values() if stop.km > 0}
        assert {r.code: lengths[r.code] for r in BUS_ROUTES} == {
            r.code: r.length_km for r in BUS_ROUTES
        }


class TestCombinedPass:
    def test_monthly_price_is_the_announced_yearly_figure_by_twelve(self) -> None:
        """Decision 3316/QĐ-UBND: 5,640,000 VND a year, 2,820,000 for priority riders."""
        feed = {spec.code: spec for spec in FEED.products}
        assert feed["BUSMETRO-MONTH"].price * 12 == 5_640_000
        assert feed["BUSMETRO-MONTH-C"].price * 12 == 2_820_000
        assert feed["BUSMETRO-MONTH"].mode == "any"


class TestCanonicalRules:
    def test_the_canonical_gtfs_validator_reports_no_error(self, tmp_path: Path) -> None:
        """MobilityData's rule set (the gtfs-validator port): only our two extension files
        are reported, as unknown files (INFO)."""
        subprocess.run(
            [sys.executable, "-c", RUN_VALIDATOR, "-i", str(HANOI), "-o", str(tmp_path)],
            check=True,
            capture_output=True,
        )
        report = json.loads((tmp_path / "report.json").read_text())
        notices = {(n["code"], n["severity"]) for n in report["notices"]}
        assert notices == {("unknown_file", "INFO")}
