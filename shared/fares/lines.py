"""A feed's network as gates and operators see it: lines with their stations in order and
their distances, bus routes with their length and fare network.

Lines are the routes whose stations have gates (GTFS `route_type` tram, subway, rail or
monorail); bus routes are those of type bus or trolleybus. Distances are `shape_dist_traveled`
(km) on each route's first trip (`Feed.stops_on_routes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.fares.feed import Feed

RAIL_ROUTE_TYPES = frozenset({"0", "1", "2", "12"})  # tram, subway, rail, monorail: the metro's
BUS_ROUTE_TYPES = frozenset({"3", "11"})  # bus, trolleybus


def route_mode(route_type: str) -> str | None:
    """`metro` or `bus`: which of the platform's products ride a GTFS route type."""
    if route_type in RAIL_ROUTE_TYPES:
        return "metro"
    return "bus" if route_type in BUS_ROUTE_TYPES else None


@dataclass(frozen=True, slots=True)
class Station:
    code: str  # stop_id: the gate's station code
    name: str
    line: str  # route_id
    km: float  # from the line's first station


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
    network: str  # the fare network that prices it (route_networks.txt)


@dataclass(frozen=True, slots=True)
class NetworkMap:
    lines: tuple[Line, ...]
    bus_routes: tuple[BusRoute, ...]
    stations: dict[str, Station]

    @classmethod
    def of(cls, feed: Feed) -> NetworkMap:
        stops = feed.stops_on_routes
        networks = feed.tariff.route_network
        lines, buses = [], []
        for row in feed.tables["routes.txt"].rows:
            code = row.get("route_id")
            name = row.get("route_long_name") or row.get("route_short_name")
            on_route = sorted((s for s in stops.values() if s.route_id == code), key=lambda s: s.km)
            if row.get("route_type") in BUS_ROUTE_TYPES:
                length = max((s.km for s in on_route), default=0.0)
                buses.append(BusRoute(code, name, length, networks.get(code, "")))
            elif on_route:
                stations = tuple(Station(s.stop_id, s.name, code, s.km) for s in on_route)
                lines.append(Line(code, name, stations))
        by_code = {station.code: station for line in lines for station in line.stations}
        return cls(tuple(lines), tuple(buses), by_code)

    def distance_km(self, entry: str, exit_: str) -> float | None:
        """Along the line; None when the two are not stations of one line."""
        start, end = self.stations.get(entry), self.stations.get(exit_)
        if start is None or end is None or start.line != end.line:
            return None
        return abs(end.km - start.km)
