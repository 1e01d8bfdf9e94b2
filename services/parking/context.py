"""What one parking process holds besides the kit's Runtime: clients and in-memory caches.

Lots, lanes and the tariff book are read on every lane decision and change rarely: they are
loaded at start-up and reloaded by a background worker every `cache_ttl`, and at once after an
operator changes them here. Reading them never touches PostgreSQL, so a decision never needs a
second connection while its transaction holds one (that is how a pool deadlocks under load).
A new tariff version must take effect well after `cache_ttl` (see TARIFF_NOTICE). Device keys
are cached per device for `cache_ttl` (a revoked device is refused at most that long after
on other replicas); they are read before the decision's transaction opens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from sqlalchemy import RowMapping

from services.parking import repository
from services.parking.occupancy import Occupancy
from services.parking.payments import Payments
from services.parking.settings import ParkingSettings
from services.parking.tariffs import Tariff, VehicleType
from shared.app import Runtime
from shared.db import Database
from shared.devicesigning import DeviceKey
from shared.errors import ServiceUnavailable
from shared.idempotency import Idempotency
from shared.ratelimit import RateLimit
from shared.redis import PipelinedRedis


@dataclass(frozen=True, slots=True)
class Lot:
    lot_id: str
    name: str
    address: str
    motorbike_capacity: int
    car_capacity: int


@dataclass(frozen=True, slots=True)
class Lane:
    lane_id: str
    lot_id: str
    direction: str
    vehicle_type: str | None
    enabled: bool


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    kind: str
    lot_id: str
    lane_id: str | None
    key: DeviceKey


# A tariff's rules, named alike in the dataclass, the table and TariffCreate (the id: `tariff_id`).
TARIFF_RULES = tuple(
    rule.name for rule in dataclasses.fields(Tariff) if rule.name not in ("id", "vehicle_type")
)


def tariff_of(values: Mapping[str, Any] | RowMapping) -> Tariff:
    """A tariff from its row's mapping, or from a TariffCreate's fields."""
    return Tariff(
        id=values["tariff_id"],
        vehicle_type=VehicleType(values["vehicle_type"]),
        **{rule: values[rule] for rule in TARIFF_RULES},
    )


def tariff_row(tariff: Tariff) -> dict[str, Any]:
    """A tariff as its row of `tariffs`."""
    rules = {rule: getattr(tariff, rule) for rule in TARIFF_RULES}
    return {"tariff_id": tariff.id, "vehicle_type": tariff.vehicle_type.value, **rules}


@dataclass
class ReferenceData:
    """Lots, lanes and every dated tariff version, as of the last reload."""

    database: Database
    lots: dict[str, Lot] = field(default_factory=dict)
    lanes: dict[str, Lane] = field(default_factory=dict)
    tariffs: list[Tariff] = field(default_factory=list)
    loaded: bool = False

    async def reload(self) -> None:
        async with self.database.transaction() as session:
            lots = await repository.list_lots(session)
            lanes = await repository.list_lanes(session)
            tariffs = await repository.list_tariffs(session, None, None)
        self.lots = {
            row.lot_id: Lot(
                row.lot_id, row.name, row.address, row.motorbike_capacity, row.car_capacity
            )
            for row in lots
        }
        self.lanes = {
            row.lane_id: Lane(row.lane_id, row.lot_id, row.direction, row.vehicle_type, row.enabled)
            for row in lanes
        }
        self.tariffs = [tariff_of(row._mapping) for row in tariffs]
        self.loaded = True

    def _ready(self) -> None:
        if not self.loaded:
            raise ServiceUnavailable(
                "Lots and tariffs are not loaded yet (database unreachable?); retry.",
                code="not_ready",
            )

    def lot(self, lot_id: str) -> Lot | None:
        self._ready()
        return self.lots.get(lot_id)

    def lane(self, lane_id: str) -> Lane | None:
        self._ready()
        return self.lanes.get(lane_id)

    def tariffs_for(self, lot_id: str, vehicle_type: VehicleType) -> list[Tariff]:
        """The city's and the lot's versions for one vehicle type: what prices a session."""
        self._ready()
        return [
            tariff
            for tariff in self.tariffs
            if tariff.vehicle_type is vehicle_type and tariff.lot_id in (None, lot_id)
        ]


class Devices:
    """Device keys by id; each entry is re-read from PostgreSQL once older than the TTL."""

    def __init__(self, database: Database, ttl_s: float) -> None:
        self.database = database
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Device | None]] = {}

    async def get(self, device_id: str) -> Device | None:
        cached = self._entries.get(device_id)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        async with self.database.transaction() as session:
            row = await repository.get_device(session, device_id)
        device = (
            None
            if row is None
            else Device(
                row.device_id,
                row.kind,
                row.lot_id,
                row.lane_id,
                DeviceKey(row.device_id, row.secret.encode(), row.enabled),
            )
        )
        if len(self._entries) > 100_000:  # unknown ids from scanners must not grow it forever
            self._entries.clear()
        self._entries[device_id] = (time.monotonic(), device)
        return device

    def forget(self, device_id: str) -> None:
        self._entries.pop(device_id, None)


DECISIONS_SHED = Counter(
    "citypass_parking_decisions_shed_total",
    "Lane decisions answered 503 overloaded because too many were in progress",
)


class DecisionLimit:
    """At most `limit` lane decisions in progress; the next lane is told at once to retry.

    Past saturation a queue only makes every car wait longer, and the decisions a lane has
    already given up on (it times out and retries, or lets the car out on the fallback) are
    work thrown away; answering 503 with Retry-After keeps the admitted ones fast.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_progress = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self.in_progress >= self.limit:
            DECISIONS_SHED.inc()
            raise ServiceUnavailable(
                f"{self.in_progress} lane decisions are in progress; retry in a second.",
                code="overloaded",
            )
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1


@dataclass
class Parking:
    settings: ParkingSettings
    runtime: Runtime
    payments: Payments
    idempotency: Idempotency
    occupancy: Occupancy
    reference: ReferenceData
    devices: Devices
    decisions: DecisionLimit
    receipt_lookups: RateLimit

    @property
    def db(self) -> Database:
        return self.runtime.db

    @classmethod
    def build(cls, settings: ParkingSettings, runtime: Runtime) -> Parking:
        return cls(
            settings=settings,
            runtime=runtime,
            payments=Payments(
                settings.payments_url,
                settings.payments_service_token.get_secret_value(),
                settings.payments_timeout_s,
            ),
            idempotency=Idempotency(runtime.db, repository.idempotency_keys),
            # Lanes' counters and nonces: one pipelined connection (redis-py costs ~145 µs of
            # CPU per command, shared.redis).
            occupancy=Occupancy(runtime.kv, PipelinedRedis(settings.redis_url)),
            reference=ReferenceData(runtime.db),
            devices=Devices(runtime.db, settings.cache_ttl.total_seconds()),
            decisions=DecisionLimit(settings.max_decisions_in_flight),
            receipt_lookups=RateLimit(
                "receipt-lookup",
                settings.receipt_lookups_per_client,
                settings.receipt_lookup_period,
            ),
        )
