"""Checks across rows and files that the GTFS reference states in words, plus CityPass's own.

Run after `check_structure` (every value parses): money in the configured currency, date and
time ranges, and fare rules that cannot all hold at once (overlapping leg rules, timeframes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from decimal import Decimal
from itertools import combinations

from shared.fares.reader import Problem, Row, Table
from shared.fares.schema import MINOR_UNITS, gtfs_date, gtfs_time

LEG_MATCH_FIELDS = (
    "network_id",
    "from_area_id",
    "to_area_id",
    "from_timeframe_group_id",
    "to_timeframe_group_id",
)


def check_semantics(tables: Mapping[str, Table], currency: str) -> list[Problem]:
    problems: list[Problem] = []
    for name in ("fare_products.txt", "citypass_fare_caps.txt"):
        if name in tables:
            problems += _money(tables[name], currency)
    problems += _date_ranges(tables)
    if "timeframes.txt" in tables:
        problems += _timeframes(tables["timeframes.txt"])
    problems += _default_category(tables["rider_categories.txt"])
    problems += _one_timezone(tables["agency.txt"])
    problems += _route_networks(tables)
    problems += _leg_rule_overlaps(tables["fare_leg_rules.txt"])
    if "fare_transfer_rules.txt" in tables:
        problems += _transfer_rules(tables["fare_transfer_rules.txt"])
    problems += _distances(tables["stop_times.txt"])
    if "citypass_fare_caps.txt" in tables:
        problems += _unique(
            tables["citypass_fare_caps.txt"], ("rider_category_id", "fare_media_id", "cap_period")
        )
    return problems


def _money(table: Table, currency: str) -> Iterator[Problem]:
    minor_units = MINOR_UNITS.get(currency, 2)
    for row in table.rows:
        if row.get("currency") != currency:
            yield Problem(
                table.name,
                row.line,
                "currency",
                f"{row.get('currency')!r}: this platform prices in {currency}",
            )
            continue
        value = Decimal(row.get("amount"))
        if value != value.quantize(Decimal(1).scaleb(-minor_units)):
            yield Problem(
                table.name,
                row.line,
                "amount",
                f"{row.get('amount')!r} has more decimals than {currency} ({minor_units})",
            )


def _date_ranges(tables: Mapping[str, Table]) -> Iterator[Problem]:
    for name, start, end in (
        ("calendar.txt", "start_date", "end_date"),
        ("feed_info.txt", "feed_start_date", "feed_end_date"),
    ):
        for row in tables[name].rows if name in tables else ():
            if (
                row.get(start)
                and row.get(end)
                and gtfs_date(row.get(end)) < gtfs_date(row.get(start))
            ):
                yield Problem(
                    name, row.line, end, f"{row.get(end)} is before {start} {row.get(start)}"
                )


def _timeframes(table: Table) -> Iterator[Problem]:
    spans: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    for row in table.rows:
        start, end = row.get("start_time"), row.get("end_time")
        if bool(start) != bool(end):
            field = "end_time" if start else "start_time"
            yield Problem(table.name, row.line, field, "start_time and end_time go together")
            continue
        begin, finish = (gtfs_time(start), gtfs_time(end)) if start else (0, 24 * 3600)
        if finish <= begin:
            yield Problem(table.name, row.line, "end_time", f"{end} is not after {start}")
            continue
        key = (row.get("timeframe_group_id"), row.get("service_id"))
        for other_begin, other_finish, other_line in spans[key]:
            if begin < other_finish and other_begin < finish:
                yield Problem(
                    table.name,
                    row.line,
                    "start_time",
                    f"overlaps the timeframe of line {other_line}",
                )
        spans[key].append((begin, finish, row.line))


def _default_category(table: Table) -> Iterator[Problem]:
    defaults = [row for row in table.rows if row.get("is_default_fare_category") == "1"]
    for row in defaults[1:]:
        yield Problem(
            table.name,
            row.line,
            "is_default_fare_category",
            f"a second default category (first on line {defaults[0].line})",
        )


def _one_timezone(table: Table) -> Iterator[Problem]:
    first = table.rows[0]
    for row in table.rows[1:]:
        if row.get("agency_timezone") != first.get("agency_timezone"):
            yield Problem(
                table.name,
                row.line,
                "agency_timezone",
                f"every agency must share one time zone ({first.get('agency_timezone')} "
                f"on line {first.line})",
            )


def _route_networks(tables: Mapping[str, Table]) -> Iterator[Problem]:
    routes = tables["routes.txt"]
    for row in routes.rows:
        if row.get("network_id"):
            yield Problem(
                routes.name,
                row.line,
                "network_id",
                "forbidden when route_networks.txt exists; assign networks there",
            )


def _leg_rule_overlaps(table: Table) -> Iterator[Problem]:
    """Two rules of the same priority that can both match one leg: the fare is ambiguous.

    With `rule_priority`, an empty field matches any value (so it overlaps a filled one);
    without it, fields filter in turn (named value, else empty), so only equal fields overlap.
    """
    wildcard = "rule_priority" in table.header
    buckets: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in table.rows:
        buckets[(row.get("rule_priority") or "0", row.get("network_id"))].append(row)
    for (priority, network), rows in buckets.items():
        pairs = list(combinations(rows, 2))
        if network and wildcard:
            pairs += [(row, other) for row in rows for other in buckets.get((priority, ""), [])]
        for row, other in pairs:
            if all(
                row.get(field) == other.get(field)
                or (wildcard and not (row.get(field) and other.get(field)))
                for field in LEG_MATCH_FIELDS
            ):
                yield Problem(
                    table.name,
                    max(row.line, other.line),
                    "fare_product_id",
                    f"overlaps the rule of line {min(row.line, other.line)} "
                    f"at rule_priority {priority}: a leg would have two fares",
                )


def _transfer_rules(table: Table) -> Iterator[Problem]:
    for row in table.rows:
        same = row.get("from_leg_group_id") == row.get("to_leg_group_id")
        if same and not row.get("transfer_count"):
            yield Problem(
                table.name, row.line, "transfer_count", "required when both leg groups are equal"
            )
        if not same and row.get("transfer_count"):
            yield Problem(
                table.name, row.line, "transfer_count", "forbidden when the leg groups differ"
            )
        if bool(row.get("duration_limit")) != bool(row.get("duration_limit_type")):
            yield Problem(
                table.name,
                row.line,
                "duration_limit_type",
                "required with duration_limit and forbidden without it",
            )


def _distances(table: Table) -> Iterator[Problem]:
    last: dict[str, tuple[int, float]] = {}
    for row in sorted(table.rows, key=lambda r: (r.get("trip_id"), int(r.get("stop_sequence")))):
        if not row.get("shape_dist_traveled"):
            continue
        distance = float(row.get("shape_dist_traveled"))
        previous = last.get(row.get("trip_id"))
        if previous is not None and distance < previous[1]:
            yield Problem(
                table.name,
                row.line,
                "shape_dist_traveled",
                f"{distance:g} is less than on line {previous[0]} ({previous[1]:g})",
            )
        last[row.get("trip_id")] = (row.line, distance)


def _unique(table: Table, columns: tuple[str, ...]) -> Iterator[Problem]:
    seen: dict[tuple[str, ...], int] = {}
    for row in table.rows:
        key = tuple(row.get(column) for column in columns)
        if key in seen:
            yield Problem(table.name, row.line, ",".join(columns), f"same as line {seen[key]}")
        seen.setdefault(key, row.line)
