"""The columns CityPass reads from a GTFS + GTFS-Fares v2 feed, as the GTFS reference names them.

Each file lists its columns with a parser (raises ValueError with the reason) and whether the
column is required; primary keys and foreign keys follow the reference. The two `citypass_*`
files are CityPass extensions for what GTFS does not model yet (docs/fares.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Parser = Callable[[str], object]


def text(value: str) -> str:
    return value


def url(value: str) -> str:
    if not re.fullmatch(r"https?://\S+", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{value!r} is not a tz database time zone") from error
    return value


def gtfs_date(value: str) -> date:
    if not re.fullmatch(r"\d{8}", value):
        raise ValueError(f"{value!r} is not a date (YYYYMMDD)")
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError as error:
        raise ValueError(f"{value!r} is not a calendar date") from error


def gtfs_time(value: str) -> int:
    """Seconds after noon minus 12 h of the service day (GTFS time: may pass 24:00:00)."""
    match = re.fullmatch(r"(\d{1,3}):([0-5]\d):([0-5]\d)", value)
    if match is None:
        raise ValueError(f"{value!r} is not a time (HH:MM:SS)")
    hours, minutes, seconds = (int(part) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def day_time(value: str) -> int:
    seconds = gtfs_time(value)
    if seconds > 24 * 3600:
        raise ValueError(f"{value!r} is after 24:00:00")
    return seconds


def integer(value: str) -> int:
    if not re.fullmatch(r"-?\d+", value):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def non_negative_integer(value: str) -> int:
    number = integer(value)
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return number


def positive_integer(value: str) -> int:
    number = integer(value)
    if number <= 0:
        raise ValueError(f"{value!r} is not positive")
    return number


def non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError as error:
        raise ValueError(f"{value!r} is not a number") from error
    if not number >= 0:  # NaN fails too
        raise ValueError(f"{value!r} is negative or not a number")
    return number


def bounded_float(low: float, high: float) -> Parser:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError as error:
            raise ValueError(f"{value!r} is not a number") from error
        if not low <= number <= high:
            raise ValueError(f"{value!r} is outside [{low:g}, {high:g}]")
        return number

    return parse


def amount(value: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation as error:
        raise ValueError(f"{value!r} is not an amount") from error
    if not number.is_finite():
        raise ValueError(f"{value!r} is not an amount")
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return number


def currency_code(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return value


def enum(*allowed: str) -> Parser:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def transfer_count(value: str) -> int:
    number = integer(value)
    if number == 0 or number < -1:
        raise ValueError(f"{value!r} must be -1 (no limit) or 1 or more")
    return number


@dataclass(frozen=True, slots=True)
class Column:
    parse: Parser = text
    required: bool = False


@dataclass(frozen=True, slots=True)
class FileSpec:
    name: str
    columns: dict[str, Column]
    primary_key: tuple[str, ...] = ()
    required: bool = True
    foreign_keys: dict[str, tuple[str, str]] = field(default_factory=dict)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
REQUIRED, ID = Column(required=True), Column(required=True)
BIT = Column(enum("0", "1"))
DAY = Column(enum("0", "1"), required=True)

FILES: tuple[FileSpec, ...] = (
    FileSpec(
        "agency.txt",
        {
            "agency_id": Column(),
            "agency_name": REQUIRED,
            "agency_url": Column(url, required=True),
            "agency_timezone": Column(timezone, required=True),
            "agency_lang": Column(),
            "agency_phone": Column(),
            "agency_fare_url": Column(url),
            "agency_email": Column(),
        },
        ("agency_id",),
    ),
    FileSpec(
        "feed_info.txt",
        {
            "feed_publisher_name": REQUIRED,
            "feed_publisher_url": Column(url, required=True),
            "feed_lang": REQUIRED,
            "default_lang": Column(),
            "feed_start_date": Column(gtfs_date),
            "feed_end_date": Column(gtfs_date),
            "feed_version": Column(),
            "feed_contact_email": Column(),
            "feed_contact_url": Column(url),
        },
        required=False,
    ),
    FileSpec(
        "stops.txt",
        {
            "stop_id": ID,
            "stop_code": Column(),
            "stop_name": Column(),
            "stop_lat": Column(bounded_float(-90, 90)),
            "stop_lon": Column(bounded_float(-180, 180)),
            "location_type": Column(enum("0", "1", "2", "3", "4")),
            "parent_station": Column(),
        },
        ("stop_id",),
        foreign_keys={"parent_station": ("stops.txt", "stop_id")},
    ),
    FileSpec(
        "routes.txt",
        {
            "route_id": ID,
            "agency_id": Column(),
            "route_short_name": Column(),
            "route_long_name": Column(),
            "route_type": Column(non_negative_integer, required=True),
            "network_id": Column(),
        },
        ("route_id",),
        foreign_keys={"agency_id": ("agency.txt", "agency_id")},
    ),
    FileSpec(
        "calendar.txt",
        {
            "service_id": ID,
            **dict.fromkeys(WEEKDAYS, DAY),
            "start_date": Column(gtfs_date, required=True),
            "end_date": Column(gtfs_date, required=True),
        },
        ("service_id",),
    ),
    FileSpec(
        "trips.txt",
        {
            "route_id": ID,
            "service_id": ID,
            "trip_id": ID,
            "direction_id": Column(enum("0", "1")),
        },
        ("trip_id",),
        foreign_keys={
            "route_id": ("routes.txt", "route_id"),
            "service_id": ("calendar.txt", "service_id"),
        },
    ),
    FileSpec(
        "stop_times.txt",
        {
            "trip_id": ID,
            "arrival_time": Column(gtfs_time),
            "departure_time": Column(gtfs_time),
            "stop_id": ID,
            "stop_sequence": Column(non_negative_integer, required=True),
            "shape_dist_traveled": Column(non_negative_float),
        },
        ("trip_id", "stop_sequence"),
        foreign_keys={"trip_id": ("trips.txt", "trip_id"), "stop_id": ("stops.txt", "stop_id")},
    ),
    FileSpec("networks.txt", {"network_id": ID, "network_name": Column()}, ("network_id",)),
    FileSpec(
        "route_networks.txt",
        {"network_id": ID, "route_id": ID},
        ("route_id",),
        foreign_keys={
            "network_id": ("networks.txt", "network_id"),
            "route_id": ("routes.txt", "route_id"),
        },
    ),
    FileSpec("areas.txt", {"area_id": ID, "area_name": Column()}, ("area_id",)),
    FileSpec(
        "stop_areas.txt",
        {"area_id": ID, "stop_id": ID},
        ("area_id", "stop_id"),
        foreign_keys={"area_id": ("areas.txt", "area_id"), "stop_id": ("stops.txt", "stop_id")},
    ),
    FileSpec(
        "timeframes.txt",
        {
            "timeframe_group_id": ID,
            "start_time": Column(day_time),
            "end_time": Column(day_time),
            "service_id": ID,
        },
        ("timeframe_group_id", "start_time", "end_time", "service_id"),
        required=False,
        foreign_keys={"service_id": ("calendar.txt", "service_id")},
    ),
    FileSpec(
        "rider_categories.txt",
        {
            "rider_category_id": ID,
            "rider_category_name": REQUIRED,
            "is_default_fare_category": BIT,
            "eligibility_url": Column(url),
        },
        ("rider_category_id",),
    ),
    FileSpec(
        "fare_media.txt",
        {
            "fare_media_id": ID,
            "fare_media_name": Column(),
            "fare_media_type": Column(enum("0", "1", "2", "3", "4"), required=True),
        },
        ("fare_media_id",),
    ),
    FileSpec(
        "fare_products.txt",
        {
            "fare_product_id": ID,
            "fare_product_name": Column(),
            "rider_category_id": Column(),
            "fare_media_id": Column(),
            "amount": Column(amount, required=True),
            "currency": Column(currency_code, required=True),
        },
        ("fare_product_id", "rider_category_id", "fare_media_id"),
        foreign_keys={
            "rider_category_id": ("rider_categories.txt", "rider_category_id"),
            "fare_media_id": ("fare_media.txt", "fare_media_id"),
        },
    ),
    FileSpec(
        "fare_leg_rules.txt",
        {
            "leg_group_id": Column(),
            "network_id": Column(),
            "from_area_id": Column(),
            "to_area_id": Column(),
            "from_timeframe_group_id": Column(),
            "to_timeframe_group_id": Column(),
            "fare_product_id": ID,
            "rule_priority": Column(non_negative_integer),
        },
        (
            "network_id",
            "from_area_id",
            "to_area_id",
            "from_timeframe_group_id",
            "to_timeframe_group_id",
            "fare_product_id",
        ),
        foreign_keys={
            "network_id": ("networks.txt", "network_id"),
            "from_area_id": ("areas.txt", "area_id"),
            "to_area_id": ("areas.txt", "area_id"),
            "from_timeframe_group_id": ("timeframes.txt", "timeframe_group_id"),
            "to_timeframe_group_id": ("timeframes.txt", "timeframe_group_id"),
            "fare_product_id": ("fare_products.txt", "fare_product_id"),
        },
    ),
    FileSpec(
        "fare_transfer_rules.txt",
        {
            "from_leg_group_id": Column(),
            "to_leg_group_id": Column(),
            "transfer_count": Column(transfer_count),
            "duration_limit": Column(positive_integer),
            "duration_limit_type": Column(enum("0", "1", "2", "3")),
            "fare_transfer_type": Column(enum("0", "1", "2"), required=True),
            "fare_product_id": Column(),
        },
        (
            "from_leg_group_id",
            "to_leg_group_id",
            "fare_product_id",
            "transfer_count",
            "duration_limit",
        ),
        required=False,
        foreign_keys={
            "from_leg_group_id": ("fare_leg_rules.txt", "leg_group_id"),
            "to_leg_group_id": ("fare_leg_rules.txt", "leg_group_id"),
            "fare_product_id": ("fare_products.txt", "fare_product_id"),
        },
    ),
    # CityPass extensions (docs/fares.md): what the platform sells, and fare caps.
    FileSpec(
        "citypass_products.txt",
        {
            "fare_product_id": ID,
            "fare_product_name_en": REQUIRED,
            "product_kind": Column(enum("single", "pass", "stored_value"), required=True),
            "mode": Column(enum("bus", "metro", "any"), required=True),
            "validity_days": Column(positive_integer),
            "rides": Column(positive_integer),
            "distance_priced": BIT,
            "line_choice": BIT,
            "network_id": Column(),
            "credential_code": REQUIRED,
        },
        ("fare_product_id",),
        required=False,
        foreign_keys={
            "fare_product_id": ("fare_products.txt", "fare_product_id"),
            "network_id": ("networks.txt", "network_id"),
        },
    ),
    FileSpec(
        "citypass_fare_caps.txt",
        {
            "fare_cap_id": ID,
            "fare_cap_name": Column(),
            "rider_category_id": Column(),
            "fare_media_id": Column(),
            "cap_period": Column(enum("day", "week"), required=True),
            "amount": Column(amount, required=True),
            "currency": Column(currency_code, required=True),
        },
        ("fare_cap_id",),
        required=False,
        foreign_keys={
            "rider_category_id": ("rider_categories.txt", "rider_category_id"),
            "fare_media_id": ("fare_media.txt", "fare_media_id"),
        },
    ),
)

SPECS: dict[str, FileSpec] = {spec.name: spec for spec in FILES}

# ISO 4217 minor units of the currencies a CityPass city may configure (VND has none).
MINOR_UNITS: dict[str, int] = {"VND": 0, "JPY": 0, "KRW": 0, "USD": 2, "EUR": 2, "THB": 2}
