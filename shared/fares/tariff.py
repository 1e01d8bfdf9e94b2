"""A validated feed compiled for pricing: one leg's fare, and the transfer rules between legs.

Leg rules follow GTFS-Fares v2 matching: a leg's network (route_networks.txt), the areas of
its first and last stop (stop_areas.txt) and the timeframes its departure and arrival fall in
(timeframes.txt, local time of agency_timezone). With a `rule_priority` column an empty field
matches anything and the highest priority wins; without it the fields filter in turn, an empty
field matching only when no remaining rule names the leg's value. The fare product's row is
chosen by rider category and fare medium: the exact row, else one that leaves the medium empty,
else the category, else both.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from shared.fares.reader import Table
from shared.fares.schema import MINOR_UNITS, WEEKDAYS, gtfs_date, gtfs_time

DAY_S = 86_400


class NoFare(LookupError):
    """No leg rule (or no product row for this rider category and medium) prices the leg."""


@dataclass(frozen=True, slots=True)
class Leg:
    """One ride: a metro trip from entry to exit gate, or a bus boarding (from = to = empty).

    Times are epoch seconds of the fare validations (tap in, tap out; a bus tap has both).
    """

    leg_id: str
    route_id: str
    departed_at: int
    arrived_at: int
    from_stop: str = ""
    to_stop: str = ""


@dataclass(frozen=True, slots=True)
class LegFare:
    amount: int  # in minor units of the feed currency
    fare_product_id: str
    leg_group_id: str


@dataclass(frozen=True, slots=True)
class TransferRule:
    from_group: str
    to_group: str
    transfer_count: int | None  # -1: no limit; None: rule between different groups
    duration_limit: int | None
    duration_limit_type: int
    fare_transfer_type: int
    fare_product_id: str

    def within(self, previous: Leg, following: Leg) -> bool:
        if self.duration_limit is None:
            return True
        start = previous.departed_at if self.duration_limit_type in (0, 1) else previous.arrived_at
        end = following.arrived_at if self.duration_limit_type in (0, 3) else following.departed_at
        return 0 <= end - start <= self.duration_limit


@dataclass(frozen=True, slots=True)
class _LegRule:
    priority: int
    fare_product_id: str
    leg_group_id: str


_Key = tuple[str, str, str, str, str]
_Prices = dict[tuple[str, str], int]


class Tariff:
    """Pure lookups over one feed version; safe to share between tasks (caches only grow)."""

    def __init__(self, tables: dict[str, Table], currency: str, *, day_start_s: int = 4 * 3600):
        self.currency = currency
        self.minor = Decimal(10) ** MINOR_UNITS.get(currency, 2)
        self.timezone = ZoneInfo(tables["agency.txt"].rows[0].get("agency_timezone"))
        self.day_start_s = day_start_s  # the fare day starts at 04:00 local time
        self.route_network = {
            row.get("route_id"): row.get("network_id") for row in tables["route_networks.txt"].rows
        }
        self.stop_areas: dict[str, tuple[str, ...]] = {}
        for row in tables["stop_areas.txt"].rows:
            stop = row.get("stop_id")
            self.stop_areas[stop] = (*self.stop_areas.get(stop, ()), row.get("area_id"))
        self.prices: dict[str, _Prices] = defaultdict(dict)
        for row in tables["fare_products.txt"].rows:
            price_key = (row.get("rider_category_id"), row.get("fare_media_id"))
            self.prices[row.get("fare_product_id")][price_key] = self.to_minor(row.get("amount"))
        legs = tables["fare_leg_rules.txt"]
        self.prioritised = "rule_priority" in legs.header
        self.rules: dict[_Key, list[_LegRule]] = defaultdict(list)
        for row in legs.rows:
            match = (
                row.get("network_id"),
                row.get("from_area_id"),
                row.get("to_area_id"),
                row.get("from_timeframe_group_id"),
                row.get("to_timeframe_group_id"),
            )
            leg_rule = _LegRule(
                int(row.get("rule_priority") or 0),
                row.get("fare_product_id"),
                row.get("leg_group_id"),
            )
            self.rules[match].append(leg_rule)
        self._services = {
            row.get("service_id"): (
                tuple(row.get(day) == "1" for day in WEEKDAYS),
                gtfs_date(row.get("start_date")),
                gtfs_date(row.get("end_date")),
            )
            for row in tables["calendar.txt"].rows
        }
        self._timeframes: list[tuple[str, str, int, int]] = []
        for row in tables["timeframes.txt"].rows if "timeframes.txt" in tables else ():
            start, end = row.get("start_time"), row.get("end_time")
            span = (gtfs_time(start), gtfs_time(end)) if start else (0, DAY_S)
            self._timeframes.append((row.get("timeframe_group_id"), row.get("service_id"), *span))
        self._breaks = sorted({edge for _, _, b, e in self._timeframes for edge in (b, e)})
        self.transfers: dict[tuple[str, str], list[TransferRule]] = defaultdict(list)
        for row in tables.get("fare_transfer_rules.txt", Table("", (), ())).rows:
            rule = TransferRule(
                row.get("from_leg_group_id"),
                row.get("to_leg_group_id"),
                int(row.get("transfer_count")) if row.get("transfer_count") else None,
                int(row.get("duration_limit")) if row.get("duration_limit") else None,
                int(row.get("duration_limit_type") or 0),
                int(row.get("fare_transfer_type")),
                row.get("fare_product_id"),
            )
            self.transfers[(rule.from_group, rule.to_group)].append(rule)
        self.caps: dict[tuple[str, str, str], int] = {}
        for row in tables.get("citypass_fare_caps.txt", Table("", (), ())).rows:
            cap_key = (
                row.get("rider_category_id"),
                row.get("fare_media_id"),
                row.get("cap_period"),
            )
            self.caps[cap_key] = self.to_minor(row.get("amount"))
        self._offsets: dict[int, int] = {}
        self._active: dict[tuple[int, int], frozenset[str]] = {}
        self._legs: dict[tuple[object, ...], LegFare] = {}

    def to_minor(self, amount: str) -> int:
        return int(Decimal(amount) * self.minor)

    # Local time -------------------------------------------------------------------------

    def local_seconds(self, at: int) -> int:
        """Epoch seconds shifted to local wall time (offsets cached per half hour)."""
        bucket = at // 1800
        offset = self._offsets.get(bucket)
        if offset is None:
            moment = datetime.fromtimestamp(bucket * 1800, UTC).astimezone(self.timezone)
            offset = self._offsets[bucket] = int(moment.utcoffset().total_seconds())  # type: ignore[union-attr]
        return at + offset

    def fare_day(self, at: int) -> int:
        """Days since 1970-01-01 of the local fare day (which starts at `day_start_s`)."""
        return (self.local_seconds(at) - self.day_start_s) // DAY_S

    def day_starts_at(self, day: int) -> int:
        """The epoch second fare day `day` starts (the offset taken at that local hour)."""
        local = day * DAY_S + self.day_start_s
        return local - (self.local_seconds(local) - local)

    @staticmethod
    def fare_week(day: int) -> int:
        """Weeks of fare days starting on Monday (day 0, 1970-01-01, was a Thursday)."""
        return (day + 3) // 7

    def timeframes_at(self, at: int) -> frozenset[str]:
        local = self.local_seconds(at)
        day, second = divmod(local, DAY_S)
        key = (day, bisect.bisect_right(self._breaks, second))
        active = self._active.get(key)
        if active is None:
            on = date.fromordinal(date(1970, 1, 1).toordinal() + day)
            active = self._active[key] = frozenset(
                group
                for group, service, begin, end in self._timeframes
                if begin <= second < end and self._runs(service, on)
            )
        return active

    def _runs(self, service: str, on: date) -> bool:
        days, start, end = self._services[service]
        return start <= on <= end and days[on.weekday()]

    # Pricing ----------------------------------------------------------------------------

    def price_leg(self, leg: Leg, category: str, medium: str = "") -> LegFare:
        from_frames = self.timeframes_at(leg.departed_at) if self._breaks else frozenset()
        to_frames = self.timeframes_at(leg.arrived_at) if self._breaks else frozenset()
        key = (leg.route_id, leg.from_stop, leg.to_stop, from_frames, to_frames, category, medium)
        fare = self._legs.get(key)
        if fare is None:
            fare = self._legs[key] = self._match(leg, from_frames, to_frames, category, medium)
        return fare

    def _match(
        self,
        leg: Leg,
        from_frames: frozenset[str],
        to_frames: frozenset[str],
        category: str,
        medium: str,
    ) -> LegFare:
        network = self.route_network.get(leg.route_id)
        if network is None:
            raise NoFare(f"route {leg.route_id!r} is in no network of the feed")
        values = (
            {network},
            set(self.stop_areas.get(leg.from_stop, ())),
            set(self.stop_areas.get(leg.to_stop, ())),
            set(from_frames),
            set(to_frames),
        )
        keys: Iterable[_Key]
        if self.prioritised:
            a, b, c, d, e = (present | {""} for present in values)
            keys = itertools.product(a, b, c, d, e)
        else:  # field by field: the rules naming the leg's value, else those leaving it empty
            keys = iter(self.rules)
            for index, present in enumerate(values):
                kept = list(keys)
                exact = [key for key in kept if key[index] in present]
                keys = iter(exact or [key for key in kept if not key[index]])
        matched = [rule for key in keys for rule in self.rules.get(key, ())]
        for priority in sorted({rule.priority for rule in matched}, reverse=True):
            fares = [
                LegFare(amount, rule.fare_product_id, rule.leg_group_id)
                for rule in matched
                if rule.priority == priority
                and (amount := self.product_price(rule.fare_product_id, category, medium))
                is not None
            ]
            if fares:
                return min(fares, key=lambda fare: fare.amount)
        raise NoFare(f"no fare leg rule prices {leg} for {category!r} with {medium!r}")

    def product_price(self, product_id: str, category: str, medium: str = "") -> int | None:
        prices = self.prices.get(product_id, {})
        for key in ((category, medium), (category, ""), ("", medium), ("", "")):
            if key in prices:
                return prices[key]
        return None

    def transfer_rules(self, from_group: str, to_group: str) -> list[TransferRule]:
        if not from_group or not to_group:
            return []
        return [
            rule
            for key in ((from_group, to_group), (from_group, ""), ("", to_group), ("", ""))
            for rule in self.transfers.get(key, ())
        ]

    def cap(self, category: str, medium: str, period: str) -> int | None:
        for key in ((category, medium), (category, ""), ("", medium), ("", "")):
            amount = self.caps.get((*key, period))
            if amount is not None:
                return amount
        return None
