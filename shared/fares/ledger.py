"""A stored-value rider's fares: journeys with transfers, then daily and weekly caps.

What a rider owes for a fare week depends only on the set of their legs, never on the order
the taps arrived in:

* Legs are grouped by **fare day**: local time (the feed's agency_timezone, Asia/Ho_Chi_Minh
  for Hanoi, UTC+7 all year) from 04:00 to 04:00 the next day, so a late-night ride counts
  with the evening before. A **fare week** is seven fare days from Monday 04:00.
* Within a day, legs are priced in order of departure (ties by leg id): each leg either
  continues the journey through a fare transfer rule or starts a new journey at its leg fare.
  Journeys do not cross a fare day boundary (no service runs at 04:00).
* day total = min(sum of the day's journey costs, daily cap);
  week total = min(sum of the week's day totals, weekly cap).
* Across network versions: a leg is priced by the version in force at its departure, a
  transfer by the rules of the version in force when the transfer leg departs, a day's cap by
  the version in force when the fare day starts (04:00), a week's by the one at its Monday
  04:00 — never by the version current when the tap happens to be processed.

A tap that arrives in order extends its day in O(1); a late or out-of-order tap, or a
corrected leg, re-prices its day from the day's legs. Each call returns what to charge now:
the change of the week total (negative when a correction refunds).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.fares.tariff import Leg, LegFare, Tariff


@dataclass(frozen=True, slots=True)
class Charge:
    leg_id: str
    leg_fare: int  # the leg's fare alone
    journey_fare: int  # what the leg adds to its journey (after any transfer rule)
    charged: int  # taken from (or, negative, returned to) the wallet now
    day_total: int
    day_cap: int | None
    week_total: int
    week_cap: int | None
    capped_today: bool

    @property
    def transfer_discount(self) -> int:
        return self.leg_fare - self.journey_fare


@dataclass(slots=True)
class _Step:
    """One priced leg inside its day, with the journey state after it."""

    leg: Leg
    fare: LegFare
    cost: int  # what this leg adds to the day (journey arithmetic)
    chain: int  # transfers so far in the journey (0: the leg started it)
    journey_fare: int  # the fare of the journey's first leg, for fare_transfer_type 2


@dataclass(slots=True)
class _Day:
    cap: int | None  # the daily cap of the version in force when the day starts
    keys: list[tuple[int, str]] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)
    uncapped: int = 0


class RiderLedger:
    """One rider's fare state for one rider category and fare medium."""

    def __init__(
        self,
        tariff: Tariff,
        category: str,
        medium: str = "",
        *,
        tariff_at: Callable[[int], Tariff] | None = None,
    ) -> None:
        """`tariff` gives local time (fare days) and the currency; `tariff_at(at)`, when given,
        the network version in force at epoch second `at`, which prices legs, transfers and
        caps (without it, `tariff` does)."""
        self.tariff = tariff
        self.tariff_at = tariff_at
        self.category = category
        self.medium = medium
        self._week_caps: dict[int, int | None] = {}
        self.days: dict[int, _Day] = {}
        self.week_sums: dict[int, int] = {}  # sum of capped day totals per fare week
        self.legs: dict[str, tuple[Leg, int]] = {}  # leg id -> (leg, fare day)

    def add(self, leg: Leg) -> Charge:
        """Price a tap (in order, late or replayed: a known leg id with the same leg is a no-op)."""
        known = self.legs.get(leg.leg_id)
        if known is not None and known[0] == leg:
            return self._charge(leg, known[1], 0)
        if known is not None:
            return self.correct(leg)
        fare = self.price(leg)
        day_index = self.tariff.fare_day(leg.departed_at)
        week = Tariff.fare_week(day_index)
        before = self.week_total(week)
        day = self.days.get(day_index)
        if day is None:
            day = self.days[day_index] = _Day(self.day_cap(day_index))
        key = (leg.departed_at, leg.leg_id)
        old_capped = self._capped(day)
        if not day.keys or key > day.keys[-1]:
            day.keys.append(key)
            step = self._step(day.steps[-1] if day.steps else None, leg, fare)
            day.steps.append(step)
            day.uncapped += step.cost
        else:
            day.keys.insert(bisect.bisect_left(day.keys, key), key)
            self._reprice(day, [*(s.leg for s in day.steps), leg])
        self.legs[leg.leg_id] = (leg, day_index)
        self.week_sums[week] = self.week_sums.get(week, 0) + self._capped(day) - old_capped
        return self._charge(leg, day_index, self.week_total(week) - before)

    def correct(self, leg: Leg) -> Charge:
        """Replace a leg already priced (same leg id): both affected days are re-priced."""
        if leg.leg_id not in self.legs:
            return self.add(leg)
        old, old_day = self.legs[leg.leg_id]
        weeks = {Tariff.fare_week(old_day), Tariff.fare_week(self.tariff.fare_day(leg.departed_at))}
        before = sum(self.week_total(week) for week in weeks)
        self._remove(old, old_day)
        del self.legs[leg.leg_id]
        self.add(leg)
        after = sum(self.week_total(week) for week in weeks)
        return self._charge(leg, self.legs[leg.leg_id][1], after - before)

    def price(self, leg: Leg) -> LegFare:
        return self._tariff(leg.departed_at).price_leg(leg, self.category, self.medium)

    def day_cap(self, day_index: int) -> int | None:
        day = self.days.get(day_index)
        if day is not None:
            return day.cap
        return self._cap_at(self.tariff.day_starts_at(day_index), "day")

    def week_cap(self, week: int) -> int | None:
        if week not in self._week_caps:
            start = self.tariff.day_starts_at(week * 7 - 3)  # its Monday (day 4 was one)
            self._week_caps[week] = self._cap_at(start, "week")
        return self._week_caps[week]

    def day_legs(self, day_index: int) -> list[tuple[Leg, int, int]]:
        """The day's legs in order of departure: (leg, its fare, what it added to the day)."""
        day = self.days.get(day_index)
        return [(s.leg, s.fare.amount, s.cost) for s in day.steps] if day is not None else []

    def week_total(self, week: int) -> int:
        total = self.week_sums.get(week, 0)
        cap = self.week_cap(week)
        return total if cap is None else min(total, cap)

    def day_total(self, day_index: int) -> int:
        day = self.days.get(day_index)
        return self._capped(day) if day is not None else 0

    def forget_before(self, week: int) -> None:
        """Drop the state of fare weeks before `week` (a late tap for them is priced alone)."""
        for day_index in [d for d in self.days if Tariff.fare_week(d) < week]:
            for step in self.days.pop(day_index).steps:
                self.legs.pop(step.leg.leg_id, None)
        for old in [w for w in self.week_sums if w < week]:
            del self.week_sums[old]
        for old in [w for w in self._week_caps if w < week]:
            del self._week_caps[old]

    # Internals --------------------------------------------------------------------------

    def _tariff(self, at: int) -> Tariff:
        return self.tariff if self.tariff_at is None else self.tariff_at(at)

    def _cap_at(self, at: int, period: str) -> int | None:
        return self._tariff(at).cap(self.category, self.medium, period)

    def _capped(self, day: _Day) -> int:
        return day.uncapped if day.cap is None else min(day.uncapped, day.cap)

    def _remove(self, leg: Leg, day_index: int) -> None:
        day = self.days[day_index]
        week = Tariff.fare_week(day_index)
        old_capped = self._capped(day)
        day.keys.remove((leg.departed_at, leg.leg_id))
        self._reprice(day, [s.leg for s in day.steps if s.leg.leg_id != leg.leg_id])
        self.week_sums[week] += self._capped(day) - old_capped

    def _reprice(self, day: _Day, legs: list[Leg]) -> None:
        legs.sort(key=lambda leg: (leg.departed_at, leg.leg_id))
        day.steps, day.uncapped = [], 0
        for leg in legs:
            fare = self.price(leg)
            step = self._step(day.steps[-1] if day.steps else None, leg, fare)
            day.steps.append(step)
            day.uncapped += step.cost

    def _step(self, previous: _Step | None, leg: Leg, fare: LegFare) -> _Step:
        """The leg's cost: a transfer from the previous leg when a rule holds, else a new journey.

        fare_transfer_type 0 charges A + AB, 1 charges A + AB + B, 2 charges AB (replacing A on
        the journey's first transfer); several rules holding: the cheapest for the rider.
        """
        if previous is not None:
            best: _Step | None = None
            tariff = self._tariff(leg.departed_at)
            for rule in tariff.transfer_rules(previous.fare.leg_group_id, fare.leg_group_id):
                if not rule.within(previous.leg, leg):
                    continue
                limit = rule.transfer_count
                if limit is not None and limit != -1 and previous.chain >= limit:
                    continue
                transfer = 0
                if rule.fare_product_id:
                    price = tariff.product_price(rule.fare_product_id, self.category, self.medium)
                    if price is None:
                        continue
                    transfer = price
                cost = transfer + (fare.amount if rule.fare_transfer_type == 1 else 0)
                if rule.fare_transfer_type == 2 and previous.chain == 0:
                    cost -= previous.journey_fare
                if best is None or cost < best.cost:
                    best = _Step(leg, fare, cost, previous.chain + 1, previous.journey_fare)
            if best is not None:
                return best
        return _Step(leg, fare, fare.amount, 0, fare.amount)

    def _charge(self, leg: Leg, day_index: int, charged: int) -> Charge:
        day = self.days[day_index]
        step = day.steps[-1]
        if step.leg.leg_id != leg.leg_id:
            step = next(s for s in day.steps if s.leg.leg_id == leg.leg_id)
        week = Tariff.fare_week(day_index)
        week_cap = self.week_cap(week)
        return Charge(
            leg_id=leg.leg_id,
            leg_fare=step.fare.amount,
            journey_fare=step.cost,
            charged=charged,
            day_total=self._capped(day),
            day_cap=day.cap,
            week_total=self.week_total(week),
            week_cap=week_cap,
            capped_today=(day.cap is not None and day.uncapped >= day.cap)
            or (week_cap is not None and self.week_sums.get(week, 0) >= week_cap),
        )
