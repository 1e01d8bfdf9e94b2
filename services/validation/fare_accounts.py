"""Stored-value fare accounts: each ticket's legs in Redis, priced by the feed's `RiderLedger`
(transfers, daily and weekly caps), and the postings that bring payments' ledger to its total.

    cp:{S}:fares:<ticket>   hash   the ticket's fare account (S = streams.shard(ticket)):
        v               version, +1 at every save (compare-and-set: two workers never both win)
        c               rider category of the last leg
        l:<leg id>      a leg of the current or the previous fare week: [route, departed,
                        arrived, from stop, to stop, open-trip entry station or ""]
        k:<charge id>   "refundable|fare week" of a charge this account posted
        p:<posting>     a posting payments has not acknowledged yet: {"path", "body"}

The order that makes money safe: a leg's price and the postings it causes are saved in one
atomic step (with the `fare.charged`/`fare.refunded` event, appended to the shard's stream in
the same script), and only then sent to payments. Each posting's `Idempotency-Key` and ledger
transfer id derive from the event that caused it, so a posting sent twice (redelivery, a
restart between the charge and the acknowledgement, two workers) moves money once; a posting
saved but never sent is sent by the next event of the ticket, or by its redelivery (the leg is
then known, costs nothing, and the saved posting goes out).
"""

from __future__ import annotations

import bisect
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from services.validation import events, streams
from services.validation.events import unix
from services.validation.outbox import encode_record
from services.validation.scripts import Script
from shared.events import TICKETS_TOPIC, TRIP_AUTO_CLOSED
from shared.fares.feed import Feed
from shared.fares.ledger import Charge, RiderLedger
from shared.fares.tariff import Leg, NoFare, Tariff
from shared.fares.versions import NetworkVersions
from shared.redis import PipelinedRedis, key, text

logger = logging.getLogger("citypass.validation.fares")

ACCOUNT_TTL_S = 21 * 86_400  # three fare weeks after the last leg
KEEP_WEEKS = 2  # the current fare week and the one before it (late offline uploads)
CACHE_SIZE = 50_000
_IDS = uuid.UUID("6f6f3c3e-6a0e-4f0c-9d55-0c1f0e7a4c11")

# Compare-and-set of a fare account, with the event of the change.
#   KEYS 1 account   2 events stream
#   ARGV 1 expected version   2 TTL   3 event record ("" none)   4 n   5.. n field/value pairs,
#        then fields to delete
#   Reply: the new version, or the whole hash when the version was not the expected one
SAVE_ACCOUNT = Script(
    """
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then return redis.call('HGETALL', KEYS[1]) end
local last = 4 + 2 * tonumber(ARGV[4])
if last > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, last)) end
if #ARGV > last then redis.call('HDEL', KEYS[1], unpack(ARGV, last + 1, #ARGV)) end
local version = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'v', version)
redis.call('EXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('XADD', KEYS[2], '*', 'k', 'event', 'c', ARGV[3]) end
return version
"""
)


def account_key(ticket_id: str) -> str:
    return key("fares", streams.shard(ticket_id), ticket_id)


def derived(event_id: str, purpose: str) -> str:
    return str(uuid.uuid5(_IDS, f"{event_id}:{purpose}"))


@dataclass(frozen=True, slots=True)
class Posting:
    """A charge or refund for payments: `key` is its Idempotency-Key."""

    key: str
    path: str  # /v1/charges or /v1/refunds
    body: dict[str, Any]

    @property
    def is_charge(self) -> bool:
        return self.path == "/v1/charges"


@dataclass(slots=True)
class Account:
    version: int = 0
    category: str = ""
    legs: dict[str, Leg] = field(default_factory=dict)
    open_trips: dict[str, str] = field(default_factory=dict)  # leg id -> entry station
    charges: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> refundable, week
    pending: dict[str, Posting] = field(default_factory=dict)
    ledger: RiderLedger | None = None
    built_for: NetworkVersions | None = None


def parse_account(raw: dict[bytes, bytes] | list[bytes]) -> Account:
    if isinstance(raw, list):  # the script's HGETALL reply
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    account = Account()
    for name_b, value in raw.items():
        name = text(name_b)
        if name == "v":
            account.version = int(value)
        elif name == "c":
            account.category = text(value)
        elif name.startswith("l:"):
            route, departed, arrived, start, end, entry = orjson.loads(value)
            account.legs[name[2:]] = Leg(name[2:], route, departed, arrived, start, end)
            if entry:
                account.open_trips[name[2:]] = entry
        elif name.startswith("k:"):
            refundable, week = text(value).split("|")
            account.charges[name[2:]] = (int(refundable), int(week))
        elif name.startswith("p:"):
            item = orjson.loads(value)
            account.pending[name[2:]] = Posting(name[2:], item["path"], item["body"])
    return account


class TariffAt:
    """The tariff of the network version in force at an epoch second (for RiderLedger)."""

    def __init__(self, versions: NetworkVersions) -> None:
        self.versions = versions
        self.starts = [int(v.effective_from.timestamp()) for v in versions]
        self.tariffs = [v.feed.tariff for v in versions]

    def __call__(self, at: int) -> Tariff:
        index = bisect.bisect_right(self.starts, at)
        if index == 0:  # before the first version: priced by the first (NoNetwork is for none)
            index = 1
        return self.tariffs[index - 1]


def default_category(feed: Feed) -> str:
    rows = feed.tables["rider_categories.txt"].rows
    return next(
        (r.get("rider_category_id") for r in rows if r.get("is_default_fare_category") == "1"), ""
    )


def route_ends(feed: Feed, route_id: str) -> tuple[str, str] | None:
    """The first and last stop of a route (by distance along it): a trip left open pays them."""
    stops = sorted(
        (s for s in feed.stops_on_routes.values() if s.route_id == route_id), key=lambda s: s.km
    )
    return (stops[0].stop_id, stops[-1].stop_id) if stops else None


def leg_of(event_type: str, decided: events.Decided, feed: Feed) -> tuple[Leg, str] | None:
    """The leg an accepted decision closes (a metro exit, a bus tap, a trip left open), with the
    entry station of a trip left open ("" otherwise); None when it closes none."""
    stops = feed.stops_on_routes
    if event_type == TRIP_AUTO_CLOSED:
        station = decided.entry_station or ""
        route = stops[station].route_id if station in stops else None
        ends = route_ends(feed, route) if route else None
        entered, closed = unix(decided.entered_at), unix(decided.closed_at)
        if ends is None or entered is None or route is None:
            return None
        return Leg(decided.validation_id, route, entered, closed or entered, *ends), station
    at = unix(decided.decided_at)
    if at is None:
        return None
    if decided.action == "exit" and decided.entry is not None and decided.station:
        entry = decided.entry
        start = entry.station or ""
        route = decided.line or (stops[start].route_id if start in stops else "")
        entered = unix(entry.entered_at) or at
        return Leg(entry.validation_id, route, entered, at, start, decided.station), ""
    if decided.action == "tap" and decided.route:
        return Leg(decided.validation_id, decided.route, at, at), ""
    return None


@dataclass(frozen=True, slots=True)
class Applied:
    charge: Charge
    postings: list[Posting]


class FareAccounts:
    """The fare accounts of stored-value tickets: Redis holds them, this process caches them
    (a save that finds another version reloads and prices again)."""

    def __init__(
        self, redis: Redis, versions: Callable[[], NetworkVersions], hot: PipelinedRedis
    ) -> None:
        self.redis = redis
        self.hot = hot  # the save, once per leg: one write, one reply parse
        self.versions = versions
        self._cache: OrderedDict[str, Account] = OrderedDict()
        self._tariff_at: TariffAt | None = None

    def tariff_at(self) -> TariffAt:
        versions = self.versions()
        if self._tariff_at is None or self._tariff_at.versions is not versions:
            self._tariff_at = TariffAt(versions)
        return self._tariff_at

    async def load(self, ticket_id: str) -> Account:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(account_key(ticket_id)))
        return parse_account(raw)

    def ledger(self, account: Account, category: str) -> RiderLedger:
        tariff_at = self.tariff_at()
        if (
            account.ledger is None
            or account.category != category
            or account.built_for is not tariff_at.versions
        ):
            base = tariff_at.versions.current().feed.tariff
            ledger = RiderLedger(base, category, tariff_at=tariff_at)
            for leg in sorted(account.legs.values(), key=lambda g: (g.departed_at, g.leg_id)):
                try:
                    ledger.add(leg)
                except NoFare:  # priced when saved; a later version may not price it
                    logger.warning("leg %s no longer priced by the feed", leg.leg_id)
            account.ledger, account.category, account.built_for = (
                ledger,
                category,
                tariff_at.versions,
            )
        return account.ledger

    def category_for(self, account: Account, given: str | None) -> str:
        if given:
            return given
        return account.category or default_category(self.versions().current().feed)

    async def apply(
        self,
        ticket_id: str,
        wallet: str,
        category: str | None,
        leg: Leg,
        event_id: str,
        open_entry: str = "",
    ) -> Applied | None:
        """Price one leg into the ticket's account and save it with the postings it causes;
        None for a leg already applied as it is (replay) or one the feed does not price."""
        account = self._cache.pop(ticket_id, None) or await self.load(ticket_id)
        while True:
            rider = self.category_for(account, category)
            ledger = self.ledger(account, rider)
            known = ledger.legs.get(leg.leg_id)
            if known is not None and known[0] == leg:
                self._remember(ticket_id, account)
                return None
            try:
                charge = ledger.add(leg)
            except NoFare as unpriced:
                logger.warning("ticket %s: %s", ticket_id, unpriced)
                self._remember(ticket_id, account)
                return None
            week = Tariff.fare_week(ledger.tariff.fare_day(leg.departed_at))
            postings, refundable = self._postings(account, charge, wallet, event_id, week)
            sets: dict[str, bytes | str] = {
                "c": rider,
                f"l:{leg.leg_id}": orjson.dumps(
                    [
                        leg.route_id,
                        leg.departed_at,
                        leg.arrived_at,
                        leg.from_stop,
                        leg.to_stop,
                        open_entry,
                    ]
                ),
            }
            sets |= {f"k:{cid}": f"{amount}|{wk}" for cid, (amount, wk) in refundable.items()}
            sets |= {f"p:{p.key}": orjson.dumps({"path": p.path, "body": p.body}) for p in postings}
            dropped = self._forget_old(account, ledger, refundable)
            record = self._event(ticket_id, wallet, leg, charge, ledger, event_id)
            args: list[str | bytes | int] = [account.version, ACCOUNT_TTL_S, record, len(sets)]
            for name, value in sets.items():
                args += [name, value]
            args += dropped
            reply = await SAVE_ACCOUNT.pipelined(
                self.hot,
                [account_key(ticket_id), streams.events_key(streams.shard(ticket_id))],
                args,
            )
            if isinstance(reply, int):
                account.version = reply
                account.legs[leg.leg_id] = leg
                if open_entry:
                    account.open_trips[leg.leg_id] = open_entry
                else:
                    account.open_trips.pop(leg.leg_id, None)
                account.charges.update(refundable)
                account.pending.update({p.key: p for p in postings})
                self._remember(ticket_id, account)
                return Applied(charge, postings)
            account = parse_account(reply)  # another worker saved first: price on its state

    def _postings(
        self, account: Account, charge: Charge, wallet: str, event_id: str, week: int
    ) -> tuple[list[Posting], dict[str, tuple[int, int]]]:
        """The charge (or the refunds, split over earlier charges) that brings payments' ledger
        to the account's total, and the charges' refundable amounts after them."""
        if charge.charged > 0:
            charge_id = derived(event_id, "fare")
            body = {
                "account_id": wallet,
                "amount": charge.charged,
                "source": "transit",
                "transfer_id": charge_id,
            }
            return [Posting(charge_id, "/v1/charges", body)], {charge_id: (charge.charged, week)}
        postings, refundable, due = [], {}, -charge.charged
        for charge_id, (amount, wk) in sorted(account.charges.items(), key=lambda c: -c[1][0]):
            if due <= 0:
                break
            part = min(due, amount)
            if part <= 0:
                continue
            refund_id = derived(event_id, f"refund:{charge_id}")
            body = {"charge_id": charge_id, "amount": part, "transfer_id": refund_id}
            postings.append(Posting(refund_id, "/v1/refunds", body))
            refundable[charge_id] = (amount - part, wk)
            due -= part
        if due > 0:
            logger.warning("refund of %s left %s with nothing to refund", event_id, due)
        return postings, refundable

    def _forget_old(
        self, account: Account, ledger: RiderLedger, keep: dict[str, tuple[int, int]]
    ) -> list[str]:
        """Fields of fare weeks before the previous one (the ledger forgets them too)."""
        if not ledger.week_sums:
            return []
        oldest = max(ledger.week_sums) - KEEP_WEEKS + 1
        ledger.forget_before(oldest)
        old_legs = [i for i in account.legs if i not in ledger.legs]
        old_charges = [c for c, (_, wk) in account.charges.items() if wk < oldest and c not in keep]
        for leg_id in old_legs:
            del account.legs[leg_id]
        for charge_id in old_charges:
            del account.charges[charge_id]
        return [f"l:{i}" for i in old_legs] + [f"k:{c}" for c in old_charges]

    def _event(
        self,
        ticket_id: str,
        wallet: str,
        leg: Leg,
        charge: Charge,
        ledger: RiderLedger,
        event_id: str,
    ) -> bytes:
        day = ledger.tariff.fare_day(leg.departed_at)
        data = {
            "ticket_id": ticket_id,
            "wallet_account_id": wallet,
            "validation_event_id": event_id,
            "leg": leg_view(leg),
            "rider_category": ledger.category,
            "fare_day": fare_date(day).isoformat(),
            "leg_fare": charge.leg_fare,
            "transfer_discount": charge.transfer_discount,
            "capped": max(0, charge.journey_fare - charge.charged),
            "charged": charge.charged,
            "day_total": charge.day_total,
            "day_cap": charge.day_cap,
            "week_total": charge.week_total,
            "week_cap": charge.week_cap,
            "capped_today": charge.capped_today,
            "currency": ledger.tariff.currency,
        }
        event = events.fare_priced(
            id=derived(event_id, "fare-event"), ticket_id=ticket_id, data=data
        )
        return encode_record(TICKETS_TOPIC, ticket_id, event)

    def _remember(self, ticket_id: str, account: Account) -> None:
        self._cache[ticket_id] = account
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def forget(self, ticket_id: str) -> None:
        self._cache.pop(ticket_id, None)

    async def acknowledged(self, ticket_id: str, posting: Posting) -> None:
        """Payments has it: the posting leaves the account (no version change: a worker that
        still holds it sends it again, and payments answers it as before)."""
        await self.redis.hdel(account_key(ticket_id), f"p:{posting.key}")
        cached = self._cache.get(ticket_id)
        if cached is not None:
            cached.pending.pop(posting.key, None)

    async def pending(self, ticket_id: str) -> list[Posting]:
        cached = self._cache.get(ticket_id)
        account = cached if cached is not None else await self.load(ticket_id)
        return list(account.pending.values())

    # The rider's statement ---------------------------------------------------------------

    async def statement(self, ticket_id: str, day: date | None) -> dict[str, Any]:
        account = await self.load(ticket_id)
        ledger = self.ledger(account, self.category_for(account, None))
        tariff = ledger.tariff
        day_index = (
            tariff.fare_day(int(datetime.now(UTC).timestamp()))
            if day is None
            else day.toordinal() - date(1970, 1, 1).toordinal()
        )
        week = Tariff.fare_week(day_index)
        day_cap, week_cap = ledger.day_cap(day_index), ledger.week_cap(week)
        before_week = sum(
            ledger.day_total(d)
            for d in ledger.days
            if Tariff.fare_week(d) == week and d < day_index
        )
        legs, uncapped = [], 0
        for leg, fare, cost in ledger.day_legs(day_index):
            paid_before = _capped(uncapped, day_cap, before_week, week_cap)
            uncapped += cost
            paid_after = _capped(uncapped, day_cap, before_week, week_cap)
            legs.append(
                {
                    **leg_view(leg),
                    "open_trip_entry": account.open_trips.get(leg.leg_id),
                    "fare": fare,
                    "transfer_discount": fare - cost,
                    "charged": paid_after - paid_before,
                    "capped": cost - (paid_after - paid_before),
                }
            )
        day_total = ledger.day_total(day_index)
        week_total = ledger.week_total(week)
        return {
            "ticket_id": ticket_id,
            "fare_day": fare_date(day_index).isoformat(),
            "currency": tariff.currency,
            "rider_category": ledger.category,
            "legs": legs,
            "day_total": day_total,
            "day_cap": day_cap,
            "week_total": week_total,
            "week_cap": week_cap,
            "capped_today": bool(
                (day_cap is not None and day_total >= day_cap)
                or (week_cap is not None and week_total >= week_cap)
            ),
        }


def _capped(day_sum: int, day_cap: int | None, week_before: int, week_cap: int | None) -> int:
    day_paid = day_sum if day_cap is None else min(day_sum, day_cap)
    week_paid = week_before + day_paid
    return (week_paid if week_cap is None else min(week_paid, week_cap)) - (
        week_before if week_cap is None else min(week_before, week_cap)
    )


def fare_date(day_index: int) -> date:
    return date.fromordinal(date(1970, 1, 1).toordinal() + day_index)


def leg_view(leg: Leg) -> dict[str, Any]:
    return {
        "leg_id": leg.leg_id,
        "route_id": leg.route_id,
        "from_stop": leg.from_stop or None,
        "to_stop": leg.to_stop or None,
        "departed_at": events.iso(leg.departed_at),
        "arrived_at": events.iso(leg.arrived_at),
    }
