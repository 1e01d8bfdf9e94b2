"""Hanoi's feed prices exactly what the Python tables price today (pure: no servers).

This test is what lets the Python tables (shared/network.py, services/ticketing/fares.py) go:
every station pair, every bus route and every product on sale must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.ticketing import fares
from services.validation.rules import bus_fare, trip_fare
from shared.fares.feed import HANOI
from shared.fares.tariff import Leg
from shared.network import BUS_ROUTES, LINES, STATIONS
from tests.fares.support import TUESDAY_8AM, hanoi

FEED = hanoi()
PAYING = ("regular", "student", "worker")
RUN_VALIDATOR = "import sys; from gtfs_validator.cli import main; sys.exit(main())"


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
        feed = {spec.code: spec for spec in FEED.products}
        for product in fares.catalogue():
            spec = feed.pop(product.code)
            assert spec.name_vi == product.name_vi
            assert spec.name_en == product.name_en
            assert spec.kind == product.kind.value
            assert spec.mode == product.mode.value
            assert spec.price == product.price_vnd
            assert list(spec.categories) == [c.value for c in product.categories]
            assert spec.validity_days == product.validity_days
            assert spec.rides == product.rides
            assert list(spec.lines) == product.lines
            assert spec.distance_priced == product.distance_priced
            assert spec.line_choice == product.line_choice
            assert spec.credential_code == product.credential_code
        assert set(feed) == {"BUSMETRO-MONTH", "BUSMETRO-MONTH-C"}  # the new combined pass

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
