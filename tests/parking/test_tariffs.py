"""Parking pricing: worked examples on the Hanoi seed tariffs, and property tests.

Seed figures used below (DEFAULT_TARIFFS, in force from 2024-01-01 local time, day 06:00-18:00):
- car: 25,000 for the first 2 h, then 15,000 per started hour; night turn 100,000;
  15 min grace; daily cap 200,000.
- motorbike: 5,000 per daytime turn (12 h block); night turn 8,000; 10 min grace;
  daily cap 10,000.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from services.parking.context import tariff_of, tariff_row
from services.parking.tariffs import (
    DEFAULT_TARIFFS,
    HANOI_TZ,
    ChargeKind,
    PricedSession,
    PriceLine,
    Tariff,
    TariffError,
    VehicleType,
    price_session,
    tariff_in_force,
)

CAR = VehicleType.CAR
MOTORBIKE = VehicleType.MOTORBIKE
SEED_CAR = next(tariff for tariff in DEFAULT_TARIFFS if tariff.vehicle_type is CAR)

# From 2024-06-01 noon a dearer car tariff: 30,000 block, 20,000/hour, 120,000 a night.
JUNE_CAR = replace(
    SEED_CAR,
    id="hn-2024-06-car",
    effective_from=datetime(2024, 6, 1, 12, 0, tzinfo=HANOI_TZ),
    first_block_price=30_000,
    per_hour_price=20_000,
    night_turn_price=120_000,
    daily_cap=250_000,
)


def local(day: str, clock: str = "00:00:00") -> datetime:
    return datetime.combine(date.fromisoformat(day), time.fromisoformat(clock), HANOI_TZ)


def kinds(priced: PricedSession) -> list[ChargeKind]:
    return [line.kind for line in priced.lines]


def amounts_by_day(lines: tuple[PriceLine, ...]) -> dict[date, int]:
    totals: dict[date, int] = {}
    for line in lines:
        totals[line.local_date] = totals.get(line.local_date, 0) + line.amount
    return totals


def price(
    entry_at: datetime,
    exit_at: datetime,
    vehicle_type: VehicleType = CAR,
    tariffs: tuple[Tariff, ...] = DEFAULT_TARIFFS,
) -> PricedSession:
    return price_session(entry_at, exit_at, vehicle_type, tariffs)


class TestGracePeriod:
    def test_exit_at_grace_edge_is_free(self) -> None:
        priced = price(local("2024-03-01", "10:00"), local("2024-03-01", "10:15"))

        assert priced.total == 0
        assert kinds(priced) == [ChargeKind.GRACE]

    def test_one_second_past_grace_pays_the_whole_session(self) -> None:
        priced = price(local("2024-03-01", "10:00"), local("2024-03-01", "10:15:01"))

        assert priced.total == 25_000
        assert kinds(priced) == [ChargeKind.FIRST_BLOCK]

    def test_zero_length_session_is_free(self) -> None:
        moment = local("2024-03-01", "10:00")

        assert price(moment, moment).total == 0

    def test_motorbike_grace_is_ten_minutes(self) -> None:
        entry = local("2024-03-01", "10:00")

        assert price(entry, entry + timedelta(minutes=10), MOTORBIKE).total == 0
        assert price(entry, entry + timedelta(minutes=10, seconds=1), MOTORBIKE).total == 5_000


class TestCarDaytime:
    def test_first_block_covers_two_hours(self) -> None:
        priced = price(local("2024-03-01", "08:00"), local("2024-03-01", "10:00"))

        assert priced.total == 25_000

    def test_three_hours_ten_minutes_is_block_plus_two_started_hours(self) -> None:
        priced = price(local("2024-03-01", "08:00"), local("2024-03-01", "11:10"))

        assert priced.total == 25_000 + 2 * 15_000
        first_block, hourly = priced.lines
        assert (first_block.kind, first_block.amount) == (ChargeKind.FIRST_BLOCK, 25_000)
        assert (hourly.kind, hourly.quantity, hourly.unit_price) == (ChargeKind.HOURLY, 2, 15_000)
        assert (hourly.start, hourly.end) == (local("2024-03-01", "10:00"), priced.exit_at)

    def test_one_second_into_the_third_hour_starts_it(self) -> None:
        priced = price(local("2024-03-01", "08:00"), local("2024-03-01", "10:00:01"))

        assert priced.total == 40_000


class TestNightAndMidnight:
    def test_overnight_stay_is_one_night_turn_worth_four_day_turns(self) -> None:
        priced = price(local("2024-03-01", "18:00"), local("2024-03-02", "06:00"))

        assert priced.total == 100_000 == 4 * SEED_CAR.first_block_price
        assert kinds(priced) == [ChargeKind.NIGHT_TURN]

    def test_crossing_midnight_at_night_is_one_turn_on_the_day_it_starts(self) -> None:
        priced = price(local("2024-03-01", "22:00"), local("2024-03-02", "02:00"))

        assert priced.total == 100_000
        (night,) = priced.lines
        assert night.local_date == date(2024, 3, 1)

    def test_evening_to_next_morning_splits_at_day_and_night_boundaries(self) -> None:
        priced = price(local("2024-03-01", "16:00"), local("2024-03-02", "09:00"))

        assert [(line.kind, line.local_date, line.amount) for line in priced.lines] == [
            (ChargeKind.FIRST_BLOCK, date(2024, 3, 1), 25_000),
            (ChargeKind.NIGHT_TURN, date(2024, 3, 1), 100_000),
            (ChargeKind.FIRST_BLOCK, date(2024, 3, 2), 25_000),
            (ChargeKind.HOURLY, date(2024, 3, 2), 15_000),
        ]
        assert priced.total == 165_000


class TestMotorbike:
    def test_daytime_is_one_turn(self) -> None:
        assert price(
            local("2024-03-01", "07:00"), local("2024-03-01", "17:00"), MOTORBIKE
        ).total == (5_000)

    def test_night_is_one_night_turn(self) -> None:
        assert price(
            local("2024-03-01", "19:00"), local("2024-03-01", "23:00"), MOTORBIKE
        ).total == (8_000)

    def test_day_into_night_is_capped_at_the_day_and_night_ticket(self) -> None:
        priced = price(local("2024-03-01", "17:00"), local("2024-03-01", "19:00"), MOTORBIKE)

        assert [(line.kind, line.amount) for line in priced.lines] == [
            (ChargeKind.FIRST_BLOCK, 5_000),
            (ChargeKind.NIGHT_TURN, 8_000),
            (ChargeKind.DAILY_CAP_ADJUSTMENT, -3_000),
        ]
        assert priced.total == 10_000


class TestDailyCap:
    def test_multi_day_stay_is_capped_per_calendar_day(self) -> None:
        priced = price(local("2024-03-01", "08:00"), local("2024-03-04", "08:00"))

        # Uncapped: day 1 = 25,000 + 8 h x 15,000 + 100,000 night; full days = 275,000.
        assert amounts_by_day(priced.lines) == {
            date(2024, 3, 1): 200_000,
            date(2024, 3, 2): 200_000,
            date(2024, 3, 3): 200_000,
            date(2024, 3, 4): 25_000,
        }
        adjustments = [
            line for line in priced.lines if line.kind is ChargeKind.DAILY_CAP_ADJUSTMENT
        ]
        assert [line.amount for line in adjustments] == [-45_000, -75_000, -75_000]
        assert priced.total == 625_000

    def test_day_below_cap_has_no_adjustment(self) -> None:
        priced = price(local("2024-03-01", "06:00"), local("2024-03-01", "18:00"))

        assert priced.total == 25_000 + 10 * 15_000
        assert ChargeKind.DAILY_CAP_ADJUSTMENT not in kinds(priced)


class TestTariffChange:
    tariffs = (*DEFAULT_TARIFFS, JUNE_CAR)

    def test_each_started_hour_is_priced_by_the_tariff_in_force_when_it_starts(self) -> None:
        priced = price(
            local("2024-06-01", "09:00"), local("2024-06-01", "15:30"), tariffs=self.tariffs
        )

        assert [
            (line.tariff_id, line.kind, line.quantity, line.amount) for line in priced.lines
        ] == [
            ("hn-2024-car", ChargeKind.FIRST_BLOCK, 1, 25_000),
            ("hn-2024-car", ChargeKind.HOURLY, 1, 15_000),
            ("hn-2024-06-car", ChargeKind.HOURLY, 4, 80_000),
        ]
        assert priced.total == 120_000

    def test_change_at_midnight_prices_the_next_day_by_the_new_tariff(self) -> None:
        midnight_car = replace(JUNE_CAR, effective_from=local("2024-06-01"))
        tariffs = (*DEFAULT_TARIFFS, midnight_car)

        priced = price(local("2024-05-31", "17:00"), local("2024-06-01", "07:00"), tariffs=tariffs)

        assert [(line.tariff_id, line.kind, line.amount) for line in priced.lines] == [
            ("hn-2024-car", ChargeKind.FIRST_BLOCK, 25_000),
            ("hn-2024-car", ChargeKind.NIGHT_TURN, 100_000),
            ("hn-2024-06-car", ChargeKind.FIRST_BLOCK, 30_000),
        ]

    def test_price_never_drops_minute_by_minute_across_every_boundary(self) -> None:
        entry = local("2024-05-31", "05:50")
        exits = [entry + timedelta(minutes=minute) for minute in range(3 * 24 * 60)]

        totals = [price(entry, exit_at, tariffs=self.tariffs).total for exit_at in exits]

        assert totals == sorted(totals)
        assert totals[-1] > 0


class TestTariffSelection:
    def test_latest_version_in_force_applies(self) -> None:
        before = tariff_in_force((*DEFAULT_TARIFFS, JUNE_CAR), CAR, local("2024-06-01", "11:59"))
        after = tariff_in_force((*DEFAULT_TARIFFS, JUNE_CAR), CAR, local("2024-06-01", "12:00"))

        assert (before, after) == (SEED_CAR, JUNE_CAR)

    def test_lot_tariff_takes_precedence_over_city_default(self) -> None:
        old_quarter = replace(SEED_CAR, id="hk-car", lot_id="hoan-kiem", first_block_price=35_000)
        tariffs = (*DEFAULT_TARIFFS, old_quarter)
        entry, exit_at = local("2024-03-01", "08:00"), local("2024-03-01", "09:00")

        assert price_session(entry, exit_at, CAR, tariffs, lot_id="hoan-kiem").total == 35_000
        assert price_session(entry, exit_at, CAR, tariffs, lot_id="ba-dinh").total == 25_000

    def test_times_in_other_offsets_are_priced_in_hanoi_time(self) -> None:
        priced = price(
            datetime(2024, 3, 1, 1, 0, tzinfo=UTC), datetime(2024, 3, 1, 4, 10, tzinfo=UTC)
        )

        assert priced.total == 55_000
        assert priced.entry_at.isoformat() == "2024-03-01T08:00:00+07:00"


class TestInvalidInput:
    def test_exit_before_entry(self) -> None:
        with pytest.raises(TariffError) as raised:
            price(local("2024-03-01", "10:00"), local("2024-03-01", "09:59"))

        assert raised.value.code == "exit_before_entry"
        assert isinstance(raised.value, ValueError)

    @pytest.mark.parametrize("naive_end", ["entry", "exit"])
    def test_naive_datetime(self, naive_end: str) -> None:
        entry, exit_at = local("2024-03-01", "10:00"), local("2024-03-01", "12:00")
        if naive_end == "entry":
            entry = entry.replace(tzinfo=None)
        else:
            exit_at = exit_at.replace(tzinfo=None)

        with pytest.raises(TariffError) as raised:
            price(entry, exit_at)

        assert raised.value.code == "naive_datetime"

    def test_no_tariff_in_force_at_entry(self) -> None:
        with pytest.raises(TariffError) as raised:
            price(local("2023-12-31", "23:00"), local("2024-01-01", "01:00"))

        assert raised.value.code == "no_tariff"

    def test_no_tariff_for_the_vehicle_type(self) -> None:
        with pytest.raises(TariffError) as raised:
            price(
                local("2024-03-01", "10:00"),
                local("2024-03-01", "12:00"),
                MOTORBIKE,
                tariffs=(SEED_CAR,),
            )

        assert raised.value.code == "no_tariff"

    @pytest.mark.parametrize(
        "field",
        ["first_block_price", "per_hour_price", "night_turn_price", "daily_cap", "grace_minutes"],
    )
    def test_negative_amount_in_tariff(self, field: str) -> None:
        negative: dict[str, Any] = {field: -1}

        with pytest.raises(TariffError) as raised:
            replace(SEED_CAR, **negative)

        assert raised.value.code == "invalid_tariff"

    def test_day_window_must_start_before_it_ends(self) -> None:
        with pytest.raises(TariffError) as raised:
            replace(SEED_CAR, day_starts_at=time(18), day_ends_at=time(6))

        assert raised.value.code == "invalid_tariff"

    def test_two_versions_taking_effect_at_the_same_moment(self) -> None:
        twin = replace(SEED_CAR, id="twin")

        with pytest.raises(TariffError) as raised:
            price(
                local("2024-03-01", "10:00"), local("2024-03-01", "12:00"), tariffs=(SEED_CAR, twin)
            )

        assert raised.value.code == "invalid_tariff"

    def test_naive_effective_from(self) -> None:
        with pytest.raises(TariffError) as raised:
            replace(SEED_CAR, effective_from=datetime(2024, 1, 1))

        assert raised.value.code == "naive_datetime"


class TestBreakdownJson:
    def test_breakdown_is_plain_json(self) -> None:
        priced = price(local("2024-03-01", "16:00"), local("2024-03-02", "09:00"))

        document = json.loads(priced.to_json())

        assert document["total"] == 165_000
        assert document["currency"] == "VND"
        assert document["lines"][1] == {
            "kind": "night_turn",
            "tariff_id": "hn-2024-car",
            "local_date": "2024-03-01",
            "start": "2024-03-01T18:00:00+07:00",
            "end": "2024-03-02T06:00:00+07:00",
            "quantity": 1,
            "unit_price": 100_000,
            "amount": 100_000,
            "description": "Night turn (18:00-06:00), one per night",
        }

    def test_breakdown_round_trips(self) -> None:
        priced = price(local("2024-03-01", "08:00"), local("2024-03-04", "08:00"))

        assert PricedSession.from_json(priced.to_json()) == priced


# Property tests: random tariff histories (a city default from BASE, then up to three later
# versions, city-wide or for LOT) and sessions of up to five days starting in the first five.

BASE = datetime(2024, 1, 1, tzinfo=HANOI_TZ)
LOT = "lot-hoan-kiem"
FIVE_DAYS = 5 * 24 * 3600

PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

amounts = st.integers(0, 300).map(lambda thousands: thousands * 1_000)
# Whole minutes hit block, hour and grace edges exactly; seconds probe just past them.
seconds_up_to_five_days = st.one_of(
    st.integers(0, FIVE_DAYS // 60).map(lambda minutes: minutes * 60),
    st.integers(0, FIVE_DAYS),
)
entries = seconds_up_to_five_days.map(lambda seconds: BASE + timedelta(seconds=seconds))
lot_ids = st.sampled_from([None, LOT])


@st.composite
def tariff_histories(draw: st.DrawFn) -> tuple[Tariff, ...]:
    later_starts = draw(st.lists(st.integers(1, 7 * 24 * 60), max_size=3, unique=True))
    versions = []
    for index, minutes in enumerate([0, *sorted(later_starts)]):
        effective_from = BASE + timedelta(minutes=minutes)
        versions.append(
            Tariff(
                id=f"v{index}",
                vehicle_type=CAR,
                lot_id=None if index == 0 else draw(lot_ids),
                effective_from=effective_from.astimezone(UTC)
                if draw(st.booleans())
                else effective_from,
                day_starts_at=time(draw(st.integers(0, 11)), draw(st.sampled_from([0, 30]))),
                day_ends_at=time(draw(st.integers(12, 23)), draw(st.sampled_from([0, 30]))),
                first_block_minutes=draw(st.integers(1, 6 * 60)),
                first_block_price=draw(amounts),
                per_hour_price=draw(amounts),
                night_turn_price=draw(amounts),
                grace_minutes=draw(st.integers(0, 30)),
                daily_cap=draw(st.none() | amounts),
            )
        )
    return tuple(versions)


class TestPricingProperties:
    @PROPERTY_SETTINGS
    @given(
        tariffs=tariff_histories(), entry=entries, duration=seconds_up_to_five_days, lot_id=lot_ids
    )
    def test_total_is_never_negative_and_equals_its_lines(
        self, tariffs: tuple[Tariff, ...], entry: datetime, duration: int, lot_id: str | None
    ) -> None:
        priced = price_session(
            entry, entry + timedelta(seconds=duration), CAR, tariffs, lot_id=lot_id
        )

        assert priced.total >= 0
        assert priced.total == sum(line.amount for line in priced.lines)

    @PROPERTY_SETTINGS
    @given(
        tariffs=tariff_histories(),
        entry=entries,
        durations=st.lists(seconds_up_to_five_days, min_size=2, max_size=6),
        lot_id=lot_ids,
    )
    def test_total_never_decreases_with_duration(
        self, tariffs: tuple[Tariff, ...], entry: datetime, durations: list[int], lot_id: str | None
    ) -> None:
        totals = [
            price_session(
                entry, entry + timedelta(seconds=seconds), CAR, tariffs, lot_id=lot_id
            ).total
            for seconds in sorted(durations)
        ]

        assert totals == sorted(totals)

    @PROPERTY_SETTINGS
    @given(
        tariffs=tariff_histories(),
        entry=entries,
        duration=seconds_up_to_five_days,
        step=st.integers(1, 90),
        lot_id=lot_ids,
    )
    def test_one_more_second_or_minute_never_lowers_the_total(
        self,
        tariffs: tuple[Tariff, ...],
        entry: datetime,
        duration: int,
        step: int,
        lot_id: str | None,
    ) -> None:
        exit_at = entry + timedelta(seconds=duration)
        shorter = price_session(entry, exit_at, CAR, tariffs, lot_id=lot_id)
        longer = price_session(
            entry, exit_at + timedelta(seconds=step), CAR, tariffs, lot_id=lot_id
        )

        assert longer.total >= shorter.total

    @PROPERTY_SETTINGS
    @given(
        tariffs=tariff_histories(), entry=entries, duration=seconds_up_to_five_days, lot_id=lot_ids
    )
    def test_no_local_day_exceeds_the_cap_in_force(
        self, tariffs: tuple[Tariff, ...], entry: datetime, duration: int, lot_id: str | None
    ) -> None:
        priced = price_session(
            entry, entry + timedelta(seconds=duration), CAR, tariffs, lot_id=lot_id
        )

        for day, charged in amounts_by_day(priced.lines).items():
            day_begins = max(priced.entry_at, datetime.combine(day, time(0), HANOI_TZ))
            cap_tariff = tariff_in_force(tariffs, CAR, day_begins, lot_id=lot_id)
            assert cap_tariff is not None
            assert charged >= 0
            if cap_tariff.daily_cap is not None:
                assert charged <= cap_tariff.daily_cap

    @PROPERTY_SETTINGS
    @given(
        tariffs=tariff_histories(), entry=entries, duration=seconds_up_to_five_days, lot_id=lot_ids
    )
    def test_lines_lie_in_the_session_grouped_by_local_day_in_time_order(
        self, tariffs: tuple[Tariff, ...], entry: datetime, duration: int, lot_id: str | None
    ) -> None:
        priced = price_session(
            entry, entry + timedelta(seconds=duration), CAR, tariffs, lot_id=lot_id
        )

        days = [line.local_date for line in priced.lines]
        assert days == sorted(days)
        charge_starts = [
            line.start for line in priced.lines if line.kind is not ChargeKind.DAILY_CAP_ADJUSTMENT
        ]
        assert charge_starts == sorted(charge_starts)
        for line in priced.lines:
            assert priced.entry_at <= line.start <= line.end <= priced.exit_at
            assert line.local_date == line.start.astimezone(HANOI_TZ).date()
            if line.kind is not ChargeKind.DAILY_CAP_ADJUSTMENT:
                assert line.amount == line.quantity * line.unit_price

    @PROPERTY_SETTINGS
    @given(
        tariffs=tariff_histories(), entry=entries, duration=seconds_up_to_five_days, lot_id=lot_ids
    )
    def test_breakdown_round_trips_through_json(
        self, tariffs: tuple[Tariff, ...], entry: datetime, duration: int, lot_id: str | None
    ) -> None:
        priced = price_session(
            entry, entry + timedelta(seconds=duration), CAR, tariffs, lot_id=lot_id
        )

        assert PricedSession.from_json(priced.to_json()) == priced

    @PROPERTY_SETTINGS
    @given(
        tariffs=tariff_histories(),
        entry=entries,
        duration=seconds_up_to_five_days,
        change_after=seconds_up_to_five_days,
        lot_id=lot_ids,
    )
    def test_an_identical_new_version_does_not_change_the_total(
        self,
        tariffs: tuple[Tariff, ...],
        entry: datetime,
        duration: int,
        change_after: int,
        lot_id: str | None,
    ) -> None:
        change_at = entry + timedelta(seconds=change_after)
        in_force = tariff_in_force(tariffs, CAR, change_at, lot_id=lot_id)
        assert in_force is not None
        assume(all(tariff.effective_from != change_at for tariff in tariffs))
        copy = replace(in_force, id="copy", effective_from=change_at)
        exit_at = entry + timedelta(seconds=duration)

        original = price_session(entry, exit_at, CAR, tariffs, lot_id=lot_id)
        with_copy = price_session(entry, exit_at, CAR, (*tariffs, copy), lot_id=lot_id)

        assert with_copy.total == original.total


class TestTariffRows:
    def test_a_tariff_and_its_row_round_trip(self) -> None:
        for tariff in DEFAULT_TARIFFS:
            row = tariff_row(tariff)
            assert (row["tariff_id"], row["vehicle_type"]) == (tariff.id, tariff.vehicle_type.value)
            assert tariff_of(row) == tariff
