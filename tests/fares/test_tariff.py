"""Leg and journey pricing by GTFS-Fares v2 rules, on a small feed made for each rule (pure)."""

from __future__ import annotations

import pytest

from shared.fares.feed import Feed, read_feed
from shared.fares.ledger import RiderLedger
from shared.fares.tariff import Leg, NoFare
from tests.fares.support import TUESDAY_8AM, hanoi_copy

HOUR = 3600
PRODUCTS = """fare_product_id,fare_product_name,rider_category_id,fare_media_id,amount,currency
PEAK,Peak,,,10000,VND
PEAK,Peak on a card,,citypass_card,12000,VND
OFF,Off-peak,,,7000,VND
OFF,Off-peak student,student,,3500,VND
LONG,Long route,,,9000,VND
ANY,Any other network,,,6000,VND
ROUND,Short then long within 30 min,,,15000,VND
HOP,Long to long,,,1000,VND
"""
TIMEFRAMES = """timeframe_group_id,start_time,end_time,service_id
peak,07:00:00,09:00:00,DAILY
off_peak,00:00:00,07:00:00,DAILY
off_peak,09:00:00,24:00:00,DAILY
"""
# No rule_priority column: each field filters in turn, empty only when no rule names the value.
LEG_RULES = """leg_group_id,network_id,from_area_id,to_area_id,\
from_timeframe_group_id,to_timeframe_group_id,fare_product_id
short,bus_short,,,peak,,PEAK
short,bus_short,,,off_peak,,OFF
long,bus_medium,,,,,LONG
,,,,,,ANY
"""
TRANSFERS = """from_leg_group_id,to_leg_group_id,transfer_count,\
duration_limit,duration_limit_type,fare_transfer_type,fare_product_id
short,long,,1800,1,2,ROUND
long,long,1,1800,1,1,HOP
"""


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Feed:
    target = tmp_path_factory.mktemp("rules")
    return read_feed(
        hanoi_copy(
            target,
            fare_products=PRODUCTS,
            timeframes=TIMEFRAMES,
            fare_leg_rules=LEG_RULES,
            fare_transfer_rules=TRANSFERS,
            citypass_products="",
            citypass_fare_caps="",
        )
    )


def bus(route: str, at: int, leg_id: str = "leg") -> Leg:
    return Leg(leg_id, route, at, at)


class TestLegRules:
    def test_timeframe_of_the_departure_picks_the_fare(self, feed: Feed) -> None:
        assert feed.tariff.price_leg(bus("09", TUESDAY_8AM), "regular").amount == 10000
        assert feed.tariff.price_leg(bus("09", TUESDAY_8AM + 2 * HOUR), "regular").amount == 7000

    def test_timeframe_end_is_excluded(self, feed: Feed) -> None:
        nine = TUESDAY_8AM + HOUR
        assert feed.tariff.price_leg(bus("09", nine - 1), "regular").fare_product_id == "PEAK"
        assert feed.tariff.price_leg(bus("09", nine), "regular").fare_product_id == "OFF"

    def test_rider_category_row(self, feed: Feed) -> None:
        off_peak = TUESDAY_8AM + 2 * HOUR
        assert feed.tariff.price_leg(bus("09", off_peak), "student").amount == 3500
        assert feed.tariff.price_leg(bus("09", off_peak), "worker").amount == 7000

    def test_fare_medium_row(self, feed: Feed) -> None:
        assert (
            feed.tariff.price_leg(bus("09", TUESDAY_8AM), "regular", "citypass_card").amount
            == 12000
        )
        assert (
            feed.tariff.price_leg(bus("09", TUESDAY_8AM), "regular", "citypass_app").amount == 10000
        )

    def test_an_empty_network_matches_only_networks_no_rule_names(self, feed: Feed) -> None:
        assert feed.tariff.price_leg(bus("86", TUESDAY_8AM), "regular").fare_product_id == "ANY"
        assert feed.tariff.price_leg(bus("01", TUESDAY_8AM), "regular").fare_product_id == "LONG"

    def test_a_route_in_no_network_has_no_fare(self, feed: Feed) -> None:
        with pytest.raises(NoFare):
            feed.tariff.price_leg(bus("99", TUESDAY_8AM), "regular")


class TestTransferRules:
    def test_type_2_replaces_both_legs_with_the_transfer_product(self, feed: Feed) -> None:
        ledger = RiderLedger(feed.tariff, "regular")
        start = TUESDAY_8AM + 2 * HOUR
        assert ledger.add(bus("09", start, "a")).charged == 7000
        second = ledger.add(bus("01", start + 1800, "b"))
        assert (second.leg_fare, second.journey_fare, second.charged) == (9000, 8000, 8000)
        assert second.day_total == 15000

    def test_outside_the_window_a_new_journey_starts(self, feed: Feed) -> None:
        ledger = RiderLedger(feed.tariff, "regular")
        start = TUESDAY_8AM + 2 * HOUR
        ledger.add(bus("09", start, "a"))
        assert ledger.add(bus("01", start + 1801, "b")).charged == 9000

    def test_type_1_adds_the_transfer_product_and_transfer_count_limits_it(
        self, feed: Feed
    ) -> None:
        ledger = RiderLedger(feed.tariff, "regular")
        charged = [ledger.add(bus("01", TUESDAY_8AM + i * 600, f"l{i}")).charged for i in range(3)]
        assert charged == [9000, 1000 + 9000, 9000]  # one long→long transfer, then a new fare
