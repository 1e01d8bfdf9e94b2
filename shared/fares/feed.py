"""A GTFS + Fares v2 feed, read whole or refused, and written back (`export_feed`).

`read_feed` is the one way in: structure (shared.fares.reader), then the rules across files
(shared.fares.checks), then the compiled `Tariff`. The feed keeps its text tables as read, so
an export reads back to the same tables and therefore the same prices.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from shared.fares.checks import check_semantics
from shared.fares.reader import FeedRejected, Table, check_structure, read_tables
from shared.fares.schema import FILES
from shared.fares.tariff import Tariff

FEEDS_HOME = Path(__file__).resolve().parents[2] / "data" / "gtfs"
HANOI = FEEDS_HOME / "hanoi"


@dataclass(frozen=True, slots=True)
class ProductSpec:
    """A product on sale: fare_products.txt rows joined with citypass_products.txt."""

    code: str
    name_vi: str
    name_en: str
    kind: str
    mode: str
    price: int  # the highest of its rows (Hanoi's products cost the same for every category)
    categories: tuple[str, ...]
    validity_days: int | None
    rides: int | None
    lines: tuple[str, ...]
    distance_priced: bool
    line_choice: bool
    credential_code: str


@dataclass(frozen=True, slots=True)
class Stop:
    stop_id: str
    name: str
    route_id: str
    km: float  # shape_dist_traveled on the route's representative trip


class Feed:
    def __init__(self, tables: dict[str, Table], currency: str) -> None:
        self.tables = tables
        self.currency = currency

    @cached_property
    def tariff(self) -> Tariff:
        return Tariff(self.tables, self.currency)

    @cached_property
    def products(self) -> tuple[ProductSpec, ...]:
        rows = self.tables["fare_products.txt"].rows
        routes_of: dict[str, list[str]] = {}
        for row in self.tables["route_networks.txt"].rows:
            routes_of.setdefault(row.get("network_id"), []).append(row.get("route_id"))
        specs = []
        for extra in self.tables.get("citypass_products.txt", Table("", (), ())).rows:
            code = extra.get("fare_product_id")
            mine = [row for row in rows if row.get("fare_product_id") == code]
            specs.append(
                ProductSpec(
                    code=code,
                    name_vi=mine[0].get("fare_product_name"),
                    name_en=extra.get("fare_product_name_en"),
                    kind=extra.get("product_kind"),
                    mode=extra.get("mode"),
                    price=max(self.tariff.to_minor(row.get("amount")) for row in mine),
                    categories=tuple(row.get("rider_category_id") for row in mine),
                    validity_days=_optional_int(extra.get("validity_days")),
                    rides=_optional_int(extra.get("rides")),
                    lines=tuple(routes_of.get(extra.get("network_id"), ())),
                    distance_priced=extra.get("distance_priced") == "1",
                    line_choice=extra.get("line_choice") == "1",
                    credential_code=extra.get("credential_code"),
                )
            )
        return tuple(specs)

    @cached_property
    def stops_on_routes(self) -> dict[str, Stop]:
        """Each stop of a route's first trip, with its distance from the trip's start."""
        names = {row.get("stop_id"): row.get("stop_name") for row in self.tables["stops.txt"].rows}
        first_trip: dict[str, str] = {}
        for row in self.tables["trips.txt"].rows:
            first_trip.setdefault(row.get("route_id"), row.get("trip_id"))
        route_of = {trip: route for route, trip in first_trip.items()}
        stops: dict[str, Stop] = {}
        times = sorted(
            self.tables["stop_times.txt"].rows,
            key=lambda r: (r.get("trip_id"), int(r.get("stop_sequence"))),
        )
        for row in times:
            route = route_of.get(row.get("trip_id"))
            if route is not None and row.get("shape_dist_traveled"):
                stop_id = row.get("stop_id")
                km = float(row.get("shape_dist_traveled"))
                stops.setdefault(stop_id, Stop(stop_id, names.get(stop_id, ""), route, km))
        return stops


def _optional_int(value: str) -> int | None:
    return int(value) if value else None


def read_feed(source: Path | str | bytes = HANOI, *, currency: str = "VND") -> Feed:
    """The feed at `source` (directory, zip path or zip bytes), else FeedRejected (all problems)."""
    tables = read_tables(source)
    problems = check_structure(tables)
    if not problems:
        problems = check_semantics(tables, currency)
    if problems:
        raise FeedRejected(problems)
    return Feed(tables, currency)


def feed_files(feed: Feed) -> dict[str, bytes]:
    """The feed's files as CSV text: known files in reference order, then any others."""
    known = [spec.name for spec in FILES if spec.name in feed.tables]
    others = sorted(set(feed.tables) - set(known))
    files = {}
    for name in known + others:
        table = feed.tables[name]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(table.header)
        writer.writerows([row.get(column) for column in table.header] for row in table.rows)
        files[name] = buffer.getvalue().encode()
    return files


ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that one feed always zips to the same bytes


def feed_zip(feed: Feed) -> bytes:
    """The feed as a canonical zip: same tables, same bytes (and so the same sha256)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in feed_files(feed).items():
            archive.writestr(zipfile.ZipInfo(name, ZIP_TIME), data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def export_feed(feed: Feed, target: Path) -> Path:
    """Write the feed as a directory, or as a zip when `target` ends in .zip."""
    if target.suffix == ".zip":
        target.write_bytes(feed_zip(feed))
    else:
        target.mkdir(parents=True, exist_ok=True)
        for name, data in feed_files(feed).items():
            (target / name).write_bytes(data)
    return target
