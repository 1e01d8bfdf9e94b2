"""Hanoi reference network and fares (public figures, 2024–2025), as data.

Metro stations carry their distance from the line's first station, so fares and minimum
travel times between any two stations on a line are derived, not tabulated by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Station:
    code: str
    line: str
    name: str
    km: float  # distance from the first station of the line


@dataclass(frozen=True, slots=True)
class Line:
    code: str
    name: str
    stations: tuple[Station, ...]


@dataclass(frozen=True, slots=True)
class BusRoute:
    code: str
    name: str
    length_km: float

    @property
    def fare_band(self) -> str:
        return bus_fare_band(self.length_km)


def _line(code: str, name: str, stations: list[tuple[str, float]]) -> Line:
    return Line(
        code,
        name,
        tuple(
            Station(f"{code}-{index:02d}", code, station_name, km)
            for index, (station_name, km) in enumerate(stations, start=1)
        ),
    )


LINES: tuple[Line, ...] = (
    _line(
        "2A",
        "Cát Linh – Hà Đông",
        [
            ("Cát Linh", 0.0),
            ("La Thành", 1.0),
            ("Thái Hà", 2.0),
            ("Láng", 3.1),
            ("Thượng Đình", 4.3),
            ("Vành Đai 3", 5.4),
            ("Phùng Khoang", 6.6),
            ("Văn Quán", 8.0),
            ("Hà Đông", 9.2),
            ("La Khê", 10.4),
            ("Văn Khê", 11.7),
            ("Yên Nghĩa", 13.0),
        ],
    ),
    _line(
        "3",
        "Nhổn – Cầu Giấy (elevated section)",
        [
            ("Nhổn", 0.0),
            ("Minh Khai", 1.3),
            ("Phú Diễn", 2.4),
            ("Cầu Diễn", 3.6),
            ("Lê Đức Thọ", 5.0),
            ("Đại học Quốc gia", 6.3),
            ("Chùa Hà", 7.4),
            ("Cầu Giấy", 8.5),
        ],
    ),
)

BUS_ROUTES: tuple[BusRoute, ...] = (
    BusRoute("01", "Gia Lâm – Bến xe Yên Nghĩa", 25.0),
    BusRoute("09", "Bờ Hồ – Cầu Giấy – Bờ Hồ", 13.5),
    BusRoute("32", "Giáp Bát – Nhổn", 20.0),
    BusRoute("86", "Ga Hà Nội – Sân bay Nội Bài", 33.0),
)

STATIONS: dict[str, Station] = {s.code: s for line in LINES for s in line.stations}

# Bus single fares by route length (8,000–20,000 VND); metro distance fares (8,000–19,000 VND).
BUS_FARE_BANDS: tuple[tuple[str, float, int], ...] = (
    ("short", 15.0, 8_000),
    ("medium", 25.0, 10_000),
    ("long", 30.0, 15_000),
    ("express", math.inf, 20_000),
)
METRO_BASE_FARE = 8_000
METRO_BASE_KM = 5.0
METRO_FARE_PER_KM = 1_000
METRO_MAX_FARE = 19_000
METRO_SPEED_KMH = 40.0  # best case, including dwell: anything faster is impossible travel
METRO_MIN_SEGMENT_S = 60


def bus_fare_band(length_km: float) -> str:
    return next(band for band, up_to, _ in BUS_FARE_BANDS if length_km <= up_to)


def bus_single_fare(band: str) -> int:
    return next(fare for name, _, fare in BUS_FARE_BANDS if name == band)


def metro_distance_km(entry: str, exit_: str) -> float:
    start, end = STATIONS[entry], STATIONS[exit_]
    if start.line != end.line:
        raise ValueError(f"{entry} and {exit_} are on different lines")
    return abs(end.km - start.km)


def metro_fare(entry: str, exit_: str) -> int:
    """Distance fare: the base fare up to 5 km, then 1,000 VND per started km, capped."""
    extra_km = max(0.0, metro_distance_km(entry, exit_) - METRO_BASE_KM)
    return min(METRO_MAX_FARE, METRO_BASE_FARE + METRO_FARE_PER_KM * math.ceil(extra_km))


def metro_max_fare(line: str) -> int:
    stations = next(candidate for candidate in LINES if candidate.code == line).stations
    return metro_fare(stations[0].code, stations[-1].code)


def min_travel_seconds(entry: str, exit_: str) -> int:
    """The fastest a rider can get from one station to another (for impossible-travel alerts)."""
    start, end = STATIONS[entry], STATIONS[exit_]
    if start.line != end.line:
        return METRO_MIN_SEGMENT_S
    if start.code == end.code:
        return 0
    return max(METRO_MIN_SEGMENT_S, int(metro_distance_km(entry, exit_) / METRO_SPEED_KMH * 3600))
