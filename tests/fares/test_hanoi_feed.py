"""Hanoi's feed prices exactly what the Python tables price today (pure: no servers).

The Python tables (shared/network.py, the ticketing catalogue) are gone: what they priced is
kept here as fixed expectations (today's station distances, metro and bus fares, bus route
lengths, the products sold), and the feed must price exactly that.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from shared.fares.feed import HANOI, ProductSpec
from shared.fares.tariff import Leg
from tests.fares.support import TUESDAY_8AM, hanoi

FEED = hanoi()
PAYING = ("regular", "student", "worker")
CONCESSION = ("student", "worker")
FREE = ("elderly", "child", "merit", "disabled", "poor_household")
RUN_VALIDATOR = "import sys; from gtfs_validator.cli import main; sys.exit(main())"
# Today's network (formerly shared/network.py): each station's line and km along it.
KM = {
    "2A": (0.0, 1.0, 2.0, 3.1, 4.3, 5.4, 6.6, 8.0, 9.2, 10.4, 11.7, 13.0),
    "3": (0.0, 1.3, 2.4, 3.6, 5.0, 6.3, 7.4, 8.5),
}
STATIONS = {
    f"{line}-{n:02d}": (line, km) for line, kms in KM.items() for n, km in enumerate(kms, 1)
}
BUS_FARES = {"01": 10_000, "09": 8_000, "32": 10_000, "86": 20_000}
BUS_LENGTHS = {"01": 25.0, "09": 13.5, "32": 20.0, "86": 33.0}


def trip_fare(entry: str, exit_: str) -> int:
    """8,000 VND up to 5 km, +1,000 per started km, at most 19,000; across lines 16,000."""
    (line, start), (other, end) = STATIONS[entry], STATIONS[exit_]
    if line != other:
        return 16_000
    return min(19_000, 8_000 + 1_000 * math.ceil(max(0.0, abs(end - start) - 5.0)))


def _by_code() -> dict[str, ProductSpec]:
    return {spec.code: spec for spec in FEED.products}


def metro_leg(entry: str, exit_: str) -> Leg:
    line = STATIONS[entry][0]
    return Leg("leg", line, TUESDAY_8AM, TUESDAY_8AM + 1200, entry, exit_)


class TestPricesMatchToday:
    @pytest.mark.parametrize("category", PAYING)
    def test_every_metro_station_pair(self, category: str) -> None:
        pairs = [(a, b) for a in STATIONS for b in STATIONS]
        priced = {pair: FEED.tariff.price_leg(metro_leg(*pair), category).amount for pair in pairs}
        assert priced == {pair: trip_fare(*pair) for pair in pairs}

    @pytest.mark.parametrize("category", PAYING)
    def test_every_bus_route(self, category: str) -> None:
        for route, fare in BUS_FARES.items():
            leg = Leg("leg", route, TUESDAY_8AM, TUESDAY_8AM)
            assert FEED.tariff.price_leg(leg, category).amount == fare

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
        assert {code: (stops[code].route_id, stops[code].km) for code in STATIONS} == STATIONS
        assert (stops["2A-01"].name, stops["2A-12"].name) == ("Cát Linh", "Yên Nghĩa")
        assert (stops["3-01"].name, stops["3-08"].name) == ("Nhổn", "Cầu Giấy")

    def test_bus_route_lengths(self) -> None:
        lengths = {stop.route_id: stop.km for stop in FEED.stops_on_routes.values() if stop.km > 0}
        assert {route: lengths[route] for route in BUS_LENGTHS} == BUS_LENGTHS


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
