"""read → export → read gives the same feed, and so the same prices (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.fares.feed import Feed, export_feed, read_feed
from shared.fares.tariff import Leg
from tests.fares.support import TUESDAY_8AM, hanoi

ORIGINAL = hanoi()


def every_price(feed: Feed) -> dict[tuple[str, str, str, str], int]:
    """The fare of every metro station pair and bus route, for every paying category."""
    stops = feed.stops_on_routes
    prices = {}
    for category in ("regular", "student", "worker"):
        for a, first in stops.items():
            for b, second in stops.items():
                if feed.tariff.route_network[first.route_id] != "metro":
                    continue
                if feed.tariff.route_network[second.route_id] != "metro":
                    continue
                leg = Leg("x", first.route_id, TUESDAY_8AM, TUESDAY_8AM + 600, a, b)
                prices[(category, first.route_id, a, b)] = feed.tariff.price_leg(
                    leg, category
                ).amount
        for route, network in feed.tariff.route_network.items():
            if network != "metro":
                leg = Leg("x", route, TUESDAY_8AM, TUESDAY_8AM)
                prices[(category, route, "", "")] = feed.tariff.price_leg(leg, category).amount
    return prices


@pytest.mark.parametrize("target", ["feed", "feed.zip"])
def test_export_reads_back_to_the_same_tables_and_prices(tmp_path: Path, target: str) -> None:
    again = read_feed(export_feed(ORIGINAL, tmp_path / target))
    assert {name: (t.header, [r.values for r in t.rows]) for name, t in again.tables.items()} == {
        name: (t.header, [r.values for r in t.rows]) for name, t in ORIGINAL.tables.items()
    }
    assert every_price(again) == every_price(ORIGINAL)
    assert again.products == ORIGINAL.products
    assert len(every_price(ORIGINAL)) == 3 * (20 * 20 + 4)  # station pairs, bus routes


def test_the_export_of_hanoi_is_the_file_in_the_repository(tmp_path: Path) -> None:
    """The committed feed is already in export form, so a re-export diffs to nothing."""
    export_feed(ORIGINAL, tmp_path)
    for path in sorted(tmp_path.iterdir()):
        assert path.read_bytes() == (Path(ORIGINAL_DIR) / path.name).read_bytes(), path.name


ORIGINAL_DIR = str(Path(__file__).resolve().parents[2] / "data" / "gtfs" / "hanoi")
