"""A stored-value rider's journeys, transfers and caps hold whatever order taps arrive in (pure)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from shared.fares.feed import read_feed
from shared.fares.ledger import Charge, RiderLedger
from shared.fares.lines import NetworkMap
from shared.fares.tariff import Leg, Tariff
from tests.fares.support import TUESDAY_8AM, edited, hanoi, hanoi_copy

TARIFF = hanoi().tariff
UNCAPPED = read_feed(
    hanoi_copy(Path(tempfile.mkdtemp()) / "uncapped", citypass_fare_caps="")
).tariff
DAY_CAP, WEEK_CAP = 40_000, 160_000
BUSES = ("01", "09", "32", "86")
STATIONS = {line.code: [s.code for s in line.stations] for line in NetworkMap.of(hanoi()).lines}
DAY_START = TUESDAY_8AM - 3 * 3600  # 05:00, Hanoi's first trains and buses
HOUR = 3600


@st.composite
def legs_of_a_day(draw: st.DrawFn, day: int = 0, max_legs: int = 12) -> list[Leg]:
    count = draw(st.integers(1, max_legs))
    minutes = sorted(draw(st.lists(st.integers(0, 18 * 60), min_size=count, max_size=count)))
    legs = []
    for index, minute in enumerate(minutes):
        at = DAY_START + day * 86_400 + minute * 60 + index  # distinct times
        if draw(st.booleans()):
            legs.append(Leg(f"d{day}-{index}", draw(st.sampled_from(BUSES)), at, at))
        else:
            line = draw(st.sampled_from(sorted(STATIONS)))
            entry, exit_ = (draw(st.sampled_from(STATIONS[line])) for _ in range(2))
            ride = draw(st.integers(60, 40 * 60))
            legs.append(Leg(f"d{day}-{index}", line, at, at + ride, entry, exit_))
    return legs


def charge_all(tariff: Tariff, legs: list[Leg]) -> tuple[RiderLedger, list[Charge]]:
    ledger = RiderLedger(tariff, "regular")
    return ledger, [ledger.add(leg) for leg in legs]


def hanoi_day_by_hand(legs: list[Leg]) -> int:
    """Hanoi's feed read by a person: a bus boarded within an hour of the last bus boarding
    (once per journey) or of the metro exit pays 5,000 VND; everything else its leg fare."""
    total, previous, transfers = 0, None, 0
    for leg in sorted(legs, key=lambda leg: (leg.departed_at, leg.leg_id)):
        cost = UNCAPPED.price_leg(leg, "regular").amount
        on_bus = leg.route_id in BUSES
        if previous is not None and on_bus:
            if previous.route_id in BUSES:
                inside = transfers < 1 and leg.departed_at - previous.departed_at <= HOUR
            else:  # timed from the exit gate: a bus boarded before it is no transfer
                inside = 0 <= leg.departed_at - previous.arrived_at <= HOUR
            if inside:
                cost, transfers = 5000, transfers + 1
            else:
                transfers = 0
        else:
            transfers = 0
        total += cost
        previous = leg
    return total


class TestDailyCap:
    @given(legs_of_a_day())
    def test_the_uncapped_day_is_the_feed_read_by_hand(self, legs: list[Leg]) -> None:
        ledger, _ = charge_all(UNCAPPED, legs)
        assert ledger.day_total(UNCAPPED.fare_day(legs[0].departed_at)) == hanoi_day_by_hand(legs)

    @given(legs_of_a_day())
    def test_charged_is_the_uncapped_sum_until_the_cap_and_never_more(
        self, legs: list[Leg]
    ) -> None:
        _, uncapped = charge_all(UNCAPPED, legs)
        _, capped = charge_all(TARIFF, legs)
        running_uncapped = running = 0
        for free, paid in zip(uncapped, capped, strict=True):
            running_uncapped += free.charged
            running += paid.charged
            assert running == min(running_uncapped, DAY_CAP)
            assert paid.day_total == running
            assert paid.capped_today == (running_uncapped >= DAY_CAP)

    @given(legs_of_a_day())
    def test_legs_an_hour_apart_cost_their_leg_fares(self, legs: list[Leg]) -> None:
        spaced = [
            replace(
                leg, departed_at=DAY_START + i * 2 * HOUR, arrived_at=DAY_START + i * 2 * HOUR + 60
            )
            for i, leg in enumerate(legs[:8])
        ]
        _, charges = charge_all(UNCAPPED, spaced)
        assert [c.charged for c in charges] == [
            UNCAPPED.price_leg(leg, "regular").amount for leg in spaced
        ]


def monday_to_sunday(days: list[list[Leg]]) -> list[Leg]:
    """Seven drawn days moved onto the fare week of Monday 2026-11-09 to Sunday 11-15."""
    return [
        replace(
            leg,
            leg_id=f"w{d}-{leg.leg_id}",
            departed_at=leg.departed_at + (d - 1) * 86_400,
            arrived_at=leg.arrived_at + (d - 1) * 86_400,
        )
        for d, day in enumerate(days)
        for leg in day
    ]


class TestWeeklyCap:
    @given(st.lists(legs_of_a_day(max_legs=8), min_size=7, max_size=7).map(monday_to_sunday))
    def test_a_week_never_costs_more_than_its_cap_nor_a_day_more_than_its(
        self, legs: list[Leg]
    ) -> None:
        ledger, charges = charge_all(TARIFF, legs)
        free_ledger, _ = charge_all(UNCAPPED, legs)
        days = {TARIFF.fare_day(leg.departed_at) for leg in legs}
        assert len({Tariff.fare_week(day) for day in days}) == 1
        expected = min(WEEK_CAP, sum(min(DAY_CAP, free_ledger.day_total(day)) for day in days))
        assert sum(c.charged for c in charges) == expected
        assert ledger.week_total(Tariff.fare_week(min(days))) == expected
        assert all(c.week_total <= WEEK_CAP and c.day_total <= DAY_CAP for c in charges)


class TestArrivalOrder:
    @given(st.data())
    def test_any_arrival_order_gives_the_same_totals(self, data: st.DataObject) -> None:
        legs = data.draw(legs_of_a_day())
        shuffled = data.draw(st.permutations(legs))
        ordered, ordered_charges = charge_all(TARIFF, legs)
        late, late_charges = charge_all(TARIFF, shuffled)
        assert sum(c.charged for c in late_charges) == sum(c.charged for c in ordered_charges)
        day = TARIFF.fare_day(legs[0].departed_at)
        assert late.day_total(day) == ordered.day_total(day)
        assert [s.cost for s in late.days[day].steps] == [s.cost for s in ordered.days[day].steps]

    @given(st.data())
    def test_a_replayed_tap_charges_nothing(self, data: st.DataObject) -> None:
        legs = data.draw(legs_of_a_day())
        ledger, _ = charge_all(TARIFF, legs)
        assert ledger.add(data.draw(st.sampled_from(legs))).charged == 0

    @given(st.data())
    def test_a_corrected_trip_is_priced_as_if_it_had_been_right(self, data: st.DataObject) -> None:
        legs = data.draw(legs_of_a_day())
        index = data.draw(st.integers(0, len(legs) - 1))
        fixed = replace(legs[index], route_id="2A", from_stop="2A-01", to_stop="2A-12")
        corrected = [*legs[:index], fixed, *legs[index + 1 :]]
        ledger, charges = charge_all(TARIFF, legs)
        charges.append(ledger.correct(fixed))
        truth, truth_charges = charge_all(TARIFF, corrected)
        assert sum(c.charged for c in charges) == sum(c.charged for c in truth_charges)
        day = TARIFF.fare_day(legs[0].departed_at)
        assert ledger.day_total(day) == truth.day_total(day)


class TestCorrection:
    def test_correcting_an_unknown_leg_prices_it(self) -> None:
        ledger = RiderLedger(TARIFF, "regular")
        assert ledger.correct(Leg("a", "86", TUESDAY_8AM, TUESDAY_8AM)).charged == 20000

    def test_a_correction_that_moves_a_leg_to_another_week_refunds_this_one(self) -> None:
        ledger = RiderLedger(TARIFF, "regular")
        leg = Leg("a", "86", TUESDAY_8AM, TUESDAY_8AM)
        ledger.add(leg)
        week_later = TUESDAY_8AM + 7 * 86_400
        moved = ledger.correct(replace(leg, departed_at=week_later, arrived_at=week_later))
        this_week = Tariff.fare_week(TARIFF.fare_day(TUESDAY_8AM))
        assert (moved.charged, ledger.week_total(this_week), moved.week_total) == (0, 0, 20000)


class TestTransfers:
    @given(st.integers(0, 2 * HOUR), st.sampled_from(BUSES), st.sampled_from(BUSES))
    def test_bus_to_bus_inside_the_window_costs_the_transfer_fare(
        self, gap: int, first: str, second: str
    ) -> None:
        ledger = RiderLedger(UNCAPPED, "regular")
        ledger.add(Leg("a", first, TUESDAY_8AM, TUESDAY_8AM))
        charge = ledger.add(Leg("b", second, TUESDAY_8AM + gap, TUESDAY_8AM + gap))
        full = UNCAPPED.price_leg(Leg("b", second, TUESDAY_8AM, TUESDAY_8AM), "regular").amount
        assert charge.journey_fare == (5000 if gap <= HOUR else full)
        assert charge.transfer_discount == (full - 5000 if gap <= HOUR else 0)

    @given(st.integers(0, 2 * HOUR), st.integers(60, 3600))
    def test_metro_to_bus_is_timed_from_the_exit_gate(self, gap: int, ride: int) -> None:
        ledger = RiderLedger(UNCAPPED, "regular")
        ledger.add(Leg("m", "3", TUESDAY_8AM, TUESDAY_8AM + ride, "3-01", "3-08"))
        boarding = TUESDAY_8AM + ride + gap
        charge = ledger.add(Leg("b", "32", boarding, boarding))
        assert charge.journey_fare == (5000 if gap <= HOUR else 10000)

    def test_the_window_includes_its_last_second(self) -> None:
        for gap, fare in ((HOUR, 5000), (HOUR + 1, 8000)):
            ledger = RiderLedger(UNCAPPED, "regular")
            ledger.add(Leg("a", "09", TUESDAY_8AM, TUESDAY_8AM))
            later = TUESDAY_8AM + gap
            assert ledger.add(Leg("b", "09", later, later)).journey_fare == fare

    def test_a_second_bus_to_bus_transfer_pays_in_full(self) -> None:
        ledger = RiderLedger(UNCAPPED, "regular")
        fares = [
            ledger.add(Leg(f"b{i}", "09", TUESDAY_8AM + i * 600, TUESDAY_8AM + i * 600))
            for i in range(3)
        ]
        assert [f.journey_fare for f in fares] == [8000, 5000, 8000]


class TestFareDay:
    def test_the_fare_day_turns_at_four_in_the_morning_hanoi_time(self) -> None:
        four_am = TUESDAY_8AM - 4 * HOUR
        assert TARIFF.fare_day(four_am - 1) == TARIFF.fare_day(four_am) - 1
        assert TARIFF.fare_day(four_am + 86_399) == TARIFF.fare_day(four_am)

    def test_the_fare_week_turns_on_monday(self) -> None:
        monday = TARIFF.fare_day(TUESDAY_8AM) - 1
        assert Tariff.fare_week(monday) == Tariff.fare_week(monday + 6)
        assert Tariff.fare_week(monday - 1) == Tariff.fare_week(monday) - 1


class TestVersions:
    def test_a_transfer_is_priced_by_the_version_at_the_transfer_leg(self) -> None:
        """The bus transfer goes from 5,000 to 6,000 at `switch`: a transfer made before it
        costs 5,000, one made after it 6,000, whichever version was current when priced."""
        target = Path(tempfile.mkdtemp()) / "dearer-transfer"
        dearer = read_feed(
            edited(target, "fare_products", "(giá demo),,,5000,VND", "(giá demo),,,6000,VND")
        ).tariff
        switch = TUESDAY_8AM + HOUR

        def tariff_at(at: int) -> Tariff:
            return dearer if at >= switch else TARIFF

        ledger = RiderLedger(dearer, "regular", tariff_at=tariff_at)  # dearer: current
        fares = [
            ledger.add(Leg(leg_id, "09", at, at)).journey_fare
            for leg_id, at in (("a", switch - 1800), ("b", switch - 60), ("c", switch + 7200))
        ]
        fares.append(ledger.add(Leg("d", "09", switch + 7800, switch + 7800)).journey_fare)
        assert fares == [8000, 5000, 8000, 6000]

    def test_each_week_is_capped_by_the_version_at_its_monday(self) -> None:
        target = Path(tempfile.mkdtemp()) / "lower-week"
        lower = read_feed(
            edited(target, "citypass_fare_caps", "regular,,week,160000", "regular,,week,100000")
        ).tariff
        next_monday = TARIFF.day_starts_at(TARIFF.fare_day(TUESDAY_8AM) + 6)
        ledger = RiderLedger(
            lower, "regular", tariff_at=lambda at: lower if at >= next_monday else TARIFF
        )
        this_week = Tariff.fare_week(TARIFF.fare_day(TUESDAY_8AM))
        assert (ledger.week_cap(this_week), ledger.week_cap(this_week + 1)) == (160_000, 100_000)
        assert Tariff.fare_week(TARIFF.fare_day(next_monday)) == this_week + 1
        assert Tariff.fare_week(TARIFF.fare_day(next_monday - 1)) == this_week
