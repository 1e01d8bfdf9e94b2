"""Parking pricing: dated tariffs applied to one parking session (pure, no I/O).

Money is integer VND; local time is Hanoi, a fixed UTC+7 with no DST.

Semantics:

- Tariff in force at an instant: for the vehicle type, the version with the latest
  ``effective_from <= instant``; a lot's own versions take precedence over the city
  default (``lot_id=None``).
- An instant is *day* when its local time lies in ``[day_starts_at, day_ends_at)`` of the
  tariff in force then, otherwise *night*. The session is cut into day and night
  stretches; a day stretch also ends at local midnight.
- Day stretch: ``first_block_price`` for the first ``first_block_minutes``, then
  ``per_hour_price`` for every started hour after that. The hour clock runs from the
  stretch start, with the block length of the tariff in force at that start.
- Night stretch: one ``night_turn_price`` however long (an overnight stay is one night
  turn), attributed to the local day on which the night stretch starts.
- Every charge is incurred at an instant (start of a block, hour or night turn), counts
  only if that instant is strictly before exit, and is priced by the tariff in force at
  that instant. So a session crossing a tariff change is split there and each part is
  priced by its own rules, without restarting the first block.
- Daily cap: charges incurred on a local calendar day are capped at the ``daily_cap`` of
  the tariff in force when the session's part of that day begins (entry or midnight).
  The excess is shown as a negative ``daily_cap_adjustment`` line for that day.
- Grace: a session no longer than ``grace_minutes`` (tariff in force at entry) is free
  and priced as a single ``grace`` line. A longer session pays for its whole duration.

A later exit only adds charges, and caps are fixed per day before clipping. So the total
is never negative, never decreases with duration, never exceeds a day's cap, and always
equals the sum of its lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from enum import StrEnum
from itertools import groupby
from typing import Any, Literal

HANOI_TZ = timezone(timedelta(hours=7), "Asia/Ho_Chi_Minh")
CURRENCY = "VND"

_ONE_HOUR = timedelta(hours=1)
_MIDNIGHT = time(0)

TariffErrorCode = Literal["exit_before_entry", "naive_datetime", "no_tariff", "invalid_tariff"]


class TariffError(ValueError):
    """Pricing input that cannot be priced; ``code`` is stable for API clients."""

    def __init__(self, code: TariffErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: TariffErrorCode = code


def _is_naive(moment: datetime) -> bool:
    return moment.tzinfo is None or moment.utcoffset() is None


def _local(moment: datetime) -> datetime:
    return moment.astimezone(HANOI_TZ)


class VehicleType(StrEnum):
    MOTORBIKE = "motorbike"
    CAR = "car"


class ChargeKind(StrEnum):
    FIRST_BLOCK = "first_block"
    HOURLY = "hourly"
    NIGHT_TURN = "night_turn"
    DAILY_CAP_ADJUSTMENT = "daily_cap_adjustment"
    GRACE = "grace"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tariff:
    """One dated version of the parking rules for a vehicle type, at one lot or city-wide."""

    id: str
    vehicle_type: VehicleType
    effective_from: datetime
    first_block_minutes: int
    first_block_price: int
    per_hour_price: int
    night_turn_price: int
    grace_minutes: int = 0
    daily_cap: int | None = None
    day_starts_at: time = time(6)
    day_ends_at: time = time(18)
    lot_id: str | None = None

    def __post_init__(self) -> None:
        if _is_naive(self.effective_from):
            raise TariffError("naive_datetime", f"tariff {self.id}: effective_from has no offset")
        amounts = {
            "first_block_price": self.first_block_price,
            "per_hour_price": self.per_hour_price,
            "night_turn_price": self.night_turn_price,
            "grace_minutes": self.grace_minutes,
            "daily_cap": 0 if self.daily_cap is None else self.daily_cap,
        }
        for name, value in amounts.items():
            if value < 0:
                raise TariffError("invalid_tariff", f"tariff {self.id}: {name} is negative")
        if self.first_block_minutes <= 0:
            raise TariffError("invalid_tariff", f"tariff {self.id}: first block must be > 0")
        if self.day_starts_at.tzinfo is not None or self.day_ends_at.tzinfo is not None:
            raise TariffError("invalid_tariff", f"tariff {self.id}: day window is local time")
        if not self.day_starts_at < self.day_ends_at:
            raise TariffError("invalid_tariff", f"tariff {self.id}: day must start before it ends")

    def is_day(self, at: datetime) -> bool:
        return self.day_starts_at <= at.astimezone(HANOI_TZ).time() < self.day_ends_at


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceLine:
    """One charge (or cap adjustment) of a priced session, attributed to a local day."""

    kind: ChargeKind
    tariff_id: str
    local_date: date
    start: datetime
    end: datetime
    quantity: int
    unit_price: int
    amount: int
    description: str

    def to_dict(self) -> dict[str, str | int]:
        return {
            "kind": self.kind.value,
            "tariff_id": self.tariff_id,
            "local_date": self.local_date.isoformat(),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "quantity": self.quantity,
            "unit_price": self.unit_price,
            "amount": self.amount,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriceLine:
        return cls(
            kind=ChargeKind(data["kind"]),
            tariff_id=str(data["tariff_id"]),
            local_date=date.fromisoformat(str(data["local_date"])),
            start=datetime.fromisoformat(str(data["start"])),
            end=datetime.fromisoformat(str(data["end"])),
            quantity=int(data["quantity"]),
            unit_price=int(data["unit_price"]),
            amount=int(data["amount"]),
            description=str(data["description"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PricedSession:
    """The price of a session and its breakdown, as stored with the session."""

    vehicle_type: VehicleType
    lot_id: str | None
    entry_at: datetime
    exit_at: datetime
    total: int
    lines: tuple[PriceLine, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "vehicle_type": self.vehicle_type.value,
            "lot_id": self.lot_id,
            "entry_at": self.entry_at.isoformat(),
            "exit_at": self.exit_at.isoformat(),
            "currency": CURRENCY,
            "total": self.total,
            "lines": [line.to_dict() for line in self.lines],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PricedSession:
        lot_id = data["lot_id"]
        return cls(
            vehicle_type=VehicleType(data["vehicle_type"]),
            lot_id=None if lot_id is None else str(lot_id),
            entry_at=datetime.fromisoformat(str(data["entry_at"])),
            exit_at=datetime.fromisoformat(str(data["exit_at"])),
            total=int(data["total"]),
            lines=tuple(PriceLine.from_dict(line) for line in data["lines"]),
        )

    @classmethod
    def from_json(cls, text: str) -> PricedSession:
        return cls.from_dict(json.loads(text))


_CITY_DEFAULT_FROM = datetime(2024, 1, 1, tzinfo=HANOI_TZ)

# Modelled on Hanoi's 2018 street-parking decision: a car pays one 25,000 turn for the
# first 2 hours, and an overnight stay counts as 4 turns; a motorbike pays one turn per
# daytime stretch and one dearer night turn, capped at a 10,000 day-and-night ticket.
DEFAULT_TARIFFS: tuple[Tariff, ...] = (
    Tariff(
        id="hn-2024-car",
        vehicle_type=VehicleType.CAR,
        effective_from=_CITY_DEFAULT_FROM,
        first_block_minutes=120,
        first_block_price=25_000,
        per_hour_price=15_000,
        night_turn_price=100_000,
        grace_minutes=15,
        daily_cap=200_000,
    ),
    Tariff(
        id="hn-2024-motorbike",
        vehicle_type=VehicleType.MOTORBIKE,
        effective_from=_CITY_DEFAULT_FROM,
        first_block_minutes=12 * 60,
        first_block_price=5_000,
        per_hour_price=0,
        night_turn_price=8_000,
        grace_minutes=10,
        daily_cap=10_000,
    ),
)


def tariff_in_force(
    tariffs: Sequence[Tariff],
    vehicle_type: VehicleType,
    at: datetime,
    *,
    lot_id: str | None = None,
) -> Tariff | None:
    """The tariff that prices `vehicle_type` at `lot_id` at instant `at`, if any."""
    if _is_naive(at):
        raise TariffError("naive_datetime", "the instant has no UTC offset")
    return _TariffBook(tariffs, vehicle_type, lot_id).in_force(at)


def price_session(
    entry_at: datetime,
    exit_at: datetime,
    vehicle_type: VehicleType,
    tariffs: Sequence[Tariff],
    *,
    lot_id: str | None = None,
) -> PricedSession:
    """Price a parking session from entry to exit with the tariffs in force along the way."""
    if _is_naive(entry_at) or _is_naive(exit_at):
        raise TariffError("naive_datetime", "entry and exit times need a UTC offset")
    if exit_at < entry_at:
        raise TariffError("exit_before_entry", f"exit {exit_at} is before entry {entry_at}")
    entry_at, exit_at = _local(entry_at), _local(exit_at)
    book = _TariffBook(tariffs, vehicle_type, lot_id)
    opening = book.in_force(entry_at)
    if opening is None:
        raise TariffError(
            "no_tariff", f"no {vehicle_type.value} tariff in force at {entry_at.isoformat()}"
        )

    if exit_at - entry_at <= timedelta(minutes=opening.grace_minutes):
        lines: list[PriceLine] = [_grace_line(opening, entry_at, exit_at)]
    else:
        charges: list[PriceLine] = []
        for stretch in _stretches(_segments(book, entry_at, exit_at)):
            if stretch.is_day:
                charges.extend(_day_charges(book, stretch))
            else:
                charges.append(_night_charge(book, stretch))
        lines = _apply_daily_caps(book, charges, entry_at, exit_at)

    return PricedSession(
        vehicle_type=vehicle_type,
        lot_id=lot_id,
        entry_at=entry_at,
        exit_at=exit_at,
        total=sum(line.amount for line in lines),
        lines=tuple(lines),
    )


class _TariffBook:
    """The tariff versions that apply to one vehicle type at one lot."""

    def __init__(
        self, tariffs: Sequence[Tariff], vehicle_type: VehicleType, lot_id: str | None
    ) -> None:
        applicable = [
            tariff
            for tariff in tariffs
            if tariff.vehicle_type == vehicle_type and tariff.lot_id in (None, lot_id)
        ]
        versions: set[tuple[str | None, datetime]] = set()
        for tariff in applicable:
            version = (tariff.lot_id, tariff.effective_from)
            if version in versions:
                raise TariffError(
                    "invalid_tariff",
                    f"two {vehicle_type.value} tariffs for lot {tariff.lot_id} "
                    f"take effect at {tariff.effective_from.isoformat()}",
                )
            versions.add(version)
        by_date = sorted(applicable, key=lambda tariff: tariff.effective_from)
        self._precedence = (
            [tariff for tariff in by_date if tariff.lot_id is not None],
            [tariff for tariff in by_date if tariff.lot_id is None],
        )
        self._changes = sorted(effective_from for _, effective_from in versions)

    def in_force(self, at: datetime) -> Tariff | None:
        for versions in self._precedence:
            current = None
            for tariff in versions:
                if tariff.effective_from > at:
                    break
                current = tariff
            if current is not None:
                return current
        return None

    def require(self, at: datetime) -> Tariff:
        tariff = self.in_force(at)
        if tariff is None:
            raise TariffError("no_tariff", f"no tariff in force at {at.isoformat()}")
        return tariff

    def next_change_after(self, at: datetime) -> datetime | None:
        return next((change for change in self._changes if change > at), None)


@dataclass(frozen=True, slots=True)
class _Span:
    """A part of the session on one side of the day window: a segment (one tariff in force)
    or a stretch (segments joined: a night, or one day's daytime)."""

    start: datetime
    end: datetime
    is_day: bool


def _segments(book: _TariffBook, entry_at: datetime, exit_at: datetime) -> list[_Span]:
    segments = []
    start = entry_at
    while start < exit_at:
        tariff = book.require(start)
        end = min(exit_at, _next_window_boundary(tariff, start))
        change = book.next_change_after(start)
        if change is not None:
            end = min(end, _local(change))
        segments.append(_Span(start, end, tariff.is_day(start)))
        start = end
    return segments


def _next_window_boundary(tariff: Tariff, at: datetime) -> datetime:
    today = at.date()
    boundaries = (
        datetime.combine(today, tariff.day_starts_at, HANOI_TZ),
        datetime.combine(today, tariff.day_ends_at, HANOI_TZ),
        datetime.combine(today + timedelta(days=1), _MIDNIGHT, HANOI_TZ),
    )
    return min(boundary for boundary in boundaries if boundary > at)


def _stretches(segments: Sequence[_Span]) -> list[_Span]:
    stretches: list[_Span] = []
    for segment in segments:
        previous = stretches[-1] if stretches else None
        if (
            previous is not None
            and previous.is_day == segment.is_day
            and (not segment.is_day or previous.start.date() == segment.start.date())
        ):
            stretches[-1] = _Span(previous.start, segment.end, previous.is_day)
        else:
            stretches.append(segment)
    return stretches


def _day_charges(book: _TariffBook, stretch: _Span) -> Iterator[PriceLine]:
    opening = book.require(stretch.start)
    block = timedelta(minutes=opening.first_block_minutes)
    yield PriceLine(
        kind=ChargeKind.FIRST_BLOCK,
        tariff_id=opening.id,
        local_date=stretch.start.date(),
        start=stretch.start,
        end=min(stretch.start + block, stretch.end),
        quantity=1,
        unit_price=opening.first_block_price,
        amount=opening.first_block_price,
        description=f"First {_minutes_text(opening.first_block_minutes)} of daytime parking",
    )

    hour_starts: list[tuple[datetime, Tariff]] = []
    hour_start = stretch.start + block
    while hour_start < stretch.end:
        hour_starts.append((hour_start, book.require(hour_start)))
        hour_start += _ONE_HOUR
    for tariff, group in groupby(hour_starts, key=lambda started: started[1]):
        starts = [started_at for started_at, _ in group]
        hours = len(starts)
        yield PriceLine(
            kind=ChargeKind.HOURLY,
            tariff_id=tariff.id,
            local_date=starts[0].date(),
            start=starts[0],
            end=min(starts[-1] + _ONE_HOUR, stretch.end),
            quantity=hours,
            unit_price=tariff.per_hour_price,
            amount=hours * tariff.per_hour_price,
            description=(
                f"{hours} started hour{'s' if hours > 1 else ''} after the first block "
                f"at {_money(tariff.per_hour_price)}/hour"
            ),
        )


def _night_charge(book: _TariffBook, stretch: _Span) -> PriceLine:
    tariff = book.require(stretch.start)
    return PriceLine(
        kind=ChargeKind.NIGHT_TURN,
        tariff_id=tariff.id,
        local_date=stretch.start.date(),
        start=stretch.start,
        end=stretch.end,
        quantity=1,
        unit_price=tariff.night_turn_price,
        amount=tariff.night_turn_price,
        description=(
            f"Night turn ({tariff.day_ends_at:%H:%M}-{tariff.day_starts_at:%H:%M}), one per night"
        ),
    )


def _apply_daily_caps(
    book: _TariffBook, charges: Sequence[PriceLine], entry_at: datetime, exit_at: datetime
) -> list[PriceLine]:
    lines: list[PriceLine] = []
    # Charges come out in time order, so each local day's charges are contiguous.
    for day, day_group in groupby(charges, key=lambda charge: charge.local_date):
        day_charges = list(day_group)
        lines.extend(day_charges)
        day_start = max(entry_at, datetime.combine(day, _MIDNIGHT, HANOI_TZ))
        day_end = min(exit_at, datetime.combine(day + timedelta(days=1), _MIDNIGHT, HANOI_TZ))
        cap_tariff = book.require(day_start)
        cap = cap_tariff.daily_cap
        charged = sum(charge.amount for charge in day_charges)
        if cap is not None and charged > cap:
            lines.append(
                PriceLine(
                    kind=ChargeKind.DAILY_CAP_ADJUSTMENT,
                    tariff_id=cap_tariff.id,
                    local_date=day,
                    start=day_start,
                    end=day_end,
                    quantity=1,
                    unit_price=cap - charged,
                    amount=cap - charged,
                    description=f"Daily cap of {_money(cap)} for {day.isoformat()}",
                )
            )
    return lines


def _grace_line(tariff: Tariff, entry_at: datetime, exit_at: datetime) -> PriceLine:
    return PriceLine(
        kind=ChargeKind.GRACE,
        tariff_id=tariff.id,
        local_date=entry_at.date(),
        start=entry_at,
        end=exit_at,
        quantity=1,
        unit_price=0,
        amount=0,
        description=f"Free: within the {tariff.grace_minutes}-minute grace period",
    )


def _minutes_text(minutes: int) -> str:
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"


def _money(amount: int) -> str:
    return f"{amount:,} {CURRENCY}"
