"""The Redis commands of the validation service's state (it has no database); its Lua scripts
are in scripts.py, its events streams in streams.py.

Keys (`cp:{tag}:name`; keys sharing a `{tag}` share a Redis Cluster slot):

    network-wide, tag `network`
      cp:{network}:gates           hash  gate id → gate JSON (never the secret)
      cp:{network}:gate-secrets    hash  gate id → device secret
      cp:{network}:gate-previous-secrets  hash  gate id → {secret, until}: the secret a rotation
                                         replaced, accepted until `until` (unix seconds)
      cp:{network}:issuer-keys     hash  kid → {public_key, status, not_after, source}
      cp:{network}:issuer-keys-as-of  hash  source → unix time of the last key set applied
      cp:{network}:products        hash  product code → {kind, rides}, learned from ticket events
      cp:{network}:deny            hash  "ticket:<id>" / "device:<fingerprint>" → {reason, until}
      cp:{network}:state-version   int   bumped on every change above; processes reload on change
      cp:{network}:bundle-key      str   development-only bundle signing key (see settings)
    per ticket T, tag = the ticket's shard S (one of SHARDS; one slot, so that the decision
    script, which also appends the decision's event to the shard's stream, is cluster-safe)
      cp:{S}:ticket:T              hash  the ticket's state, until its validity ends + 1 day:
                                         kind, rides (-1 = unlimited), wallet, product (from
                                         ticketing), balance (after the last fare), used (rides
                                         consumed), trip_vid/_station/_at/_gate/_kind/_wallet
                                         (the open metro trip), bus:<route> (last boarding)
      cp:{S}:qr-used:T:<at>:<ctr>  str   "gate|validation id": one-time use of a dynamic QR,
                                         online or uploaded, until every path's last acceptance
                                         (timing.py)
      cp:{S}:device-nonce:<gate>:<nonce>  the gate request's nonce (devicesigning)
      cp:{S}:offline-use:T:<at>:<ctr> hash gate → validation id, accepted offline uses of a QR
      cp:{S}:upload:T:<vid>        str   an offline decision already reconciled
      cp:{S}:events                stream every event of validation, until Kafka acknowledged
                                         it (streams.py); decisions of unreadable QRs go to the
                                         gate's shard
    cp:{trips}:open                zset  "ticket|entry vid" by the time its trip must auto-close
    cp:{W}:unpaid-fares            hash  per wallet: validation id → charge that got 402
    cp:{unpaid}:wallets            set   wallets with unpaid fares (re-checked periodically)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from services.validation.schemas import GateRead
from services.validation.scripts import CLOSE_TRIP, MARK_UPLOAD, RECONCILE, VALIDATE
from services.validation.streams import events_key, shard
from shared.devicesigning import nonce_key
from shared.redis import PipelinedRedis, key, text

NETWORK = "network"
GATES = key("gates", NETWORK)
GATE_SECRETS = key("gate-secrets", NETWORK)
GATE_PREVIOUS_SECRETS = key("gate-previous-secrets", NETWORK)
ISSUER_KEYS = key("issuer-keys", NETWORK)
ISSUER_KEYS_AS_OF = key("issuer-keys-as-of", NETWORK)
PRODUCTS = key("products", NETWORK)
DENY = key("deny", NETWORK)
STATE_VERSION = key("state-version", NETWORK)
BUNDLE_KEY = key("bundle-key", NETWORK)
OPEN_TRIPS = key("open", "trips")
UNPAID_WALLETS = key("wallets", "unpaid")
KEY_LAYOUT = key("key-layout", NETWORK)


def ticket_key(ticket_id: str) -> str:
    return key("ticket", shard(ticket_id), ticket_id)


def qr_used_key(ticket_id: str, at: int, counter: int) -> str:
    return key("qr-used", shard(ticket_id), ticket_id, str(at), str(counter))


def offline_use_key(ticket_id: str, at: int, counter: int) -> str:
    return key("offline-use", shard(ticket_id), ticket_id, str(at), str(counter))


def upload_key(ticket_id: str, validation_id: str) -> str:
    return key("upload", shard(ticket_id), ticket_id, validation_id)


def unpaid_key(wallet_id: str) -> str:
    return key("unpaid-fares", wallet_id)


@dataclass(frozen=True, slots=True)
class Trip:
    validation_id: str
    station: str
    at: int


@dataclass(frozen=True, slots=True)
class StateOutcome:
    """What the decision script answered."""

    outcome: str
    action: str = ""
    kind: str = ""
    rides_left: int | None = None
    wallet: str | None = None
    balance: int | None = None
    closed_trip: Trip | None = None
    auto_closed_trip: Trip | None = None


def _trip(vid: str, station: str, at: str) -> Trip | None:
    return Trip(vid, station, int(at)) if vid else None


def script_settings(nonce_ttl_s: int, max_trip_s: int, passback_s: int) -> str:
    """ARGV 2 of the decision script: fixed for the life of the process."""
    return f"{nonce_ttl_s}|{max_trip_s}|{passback_s}"


def parse_outcome(reply: str) -> StateOutcome:
    """The decision script's reply (also read back from the stream by the relay)."""
    fields = reply.split("|")
    if len(fields) == 1:
        return StateOutcome(fields[0])
    outcome, action, kind, rides_left, wallet, balance, *trips = fields
    return StateOutcome(
        outcome=outcome,
        action=action,
        kind=kind,
        rides_left=int(rides_left) if rides_left else None,
        wallet=wallet or None,
        balance=int(balance) if balance else None,
        closed_trip=_trip(*trips[0:3]),
        auto_closed_trip=_trip(*trips[3:6]),
    )


@dataclass(frozen=True, slots=True)
class DecisionCall:
    """One gate decision for the decision script (see its contract in scripts.py)."""

    gate_id: str
    nonce: str
    now: int
    context: bytes  # decisions.context(...), appended to the stream with the reply
    pre: str = ""  # a verdict before the replay step: the QR is not consumed
    # The code, when it could be read (else the gate's shard holds the nonce and the event).
    ticket_id: str = ""
    at: int = 0
    counter: int = 0
    post: str = ""  # a verdict after the replay step
    action: str = ""  # entry | exit | both | bus
    place: str = ""  # station (metro) or route (bus)
    validation_id: str = ""
    kind: str = ""  # the product's rule if ticketing has not announced the ticket
    rides: int = -1  # -1 = unlimited
    expire_at: int = 0  # when the ticket's state may go
    marker_expires_at: int = 0  # when the QR's used-marker may go (timing.py)

    @property
    def tag(self) -> str:
        return shard(self.ticket_id or self.gate_id)

    def argv(self) -> str:
        """ARGV 1: one string, split once in Lua (cheaper than eleven arguments)."""
        return (
            f"{self.now}|{self.pre}|{self.post}|{self.action}|{self.place}|{self.validation_id}|"
            f"{self.kind}|{self.rides}|{self.gate_id}|{self.expire_at}|{self.marker_expires_at}"
        )


async def validate(redis: PipelinedRedis, call: DecisionCall, settings: str) -> StateOutcome:
    """`settings` is ARGV 2 of the decision script (`script_settings`)."""
    tag = call.tag
    keys = (
        nonce_key(call.gate_id, call.nonce, tag=tag),
        key("qr-used", tag, call.ticket_id, str(call.at), str(call.counter)),
        key("ticket", tag, call.ticket_id),
        events_key(tag),
    )
    raw = await VALIDATE.pipelined(redis, keys, (call.argv(), settings, call.context))
    return parse_outcome(text(raw))


@dataclass(frozen=True, slots=True)
class ClosedTrip:
    trip: Trip
    kind: str
    wallet: str | None


async def close_trip(
    redis: Redis, ticket_id: str, entry_validation_id: str, context: bytes
) -> ClosedTrip | None:
    tag = shard(ticket_id)
    reply = await CLOSE_TRIP(
        redis, (ticket_key(ticket_id), events_key(tag)), (entry_validation_id, context)
    )
    if not reply:
        return None
    station, at, kind, wallet = (text(item) for item in reply)
    return ClosedTrip(Trip(entry_validation_id, station, int(at)), kind, wallet or None)


@dataclass(frozen=True, slots=True)
class ReconcileCall:
    ticket_id: str
    at: int
    counter: int
    validation_id: str
    gate_id: str
    accepted: bool
    action: str
    station: str
    scanned_at: int
    markers_expire_at: int
    expire_at: int
    default_kind: str
    default_rides: int
    context: bytes


async def reconcile(redis: Redis, call: ReconcileCall) -> list[str] | None:
    """The script's reply (see RECONCILE; read by decisions.upload_outcome), None if the
    decision was uploaded before."""
    t = call.ticket_id
    keys = (
        upload_key(t, call.validation_id),
        offline_use_key(t, call.at, call.counter),
        qr_used_key(t, call.at, call.counter),
        ticket_key(t),
        events_key(shard(t)),
    )
    args = (
        call.validation_id,
        call.gate_id,
        "1" if call.accepted else "0",
        call.action,
        call.station,
        call.scanned_at,
        call.markers_expire_at,
        call.expire_at,
        call.default_kind,
        call.default_rides,
        call.context,
    )
    reply = [text(item) for item in await RECONCILE(redis, keys, args)]
    return None if reply[0] == "duplicate" else reply


async def mark_upload(
    redis: Redis, gate_id: str, validation_id: str, ttl_s: int, context: bytes
) -> bool:
    """An uploaded decision without a readable ticket, recorded once under its gate."""
    tag = shard(gate_id)
    keys = (key("upload", tag, gate_id, validation_id), events_key(tag))
    return bool(await MARK_UPLOAD(redis, keys, (ttl_s, context)))


_OLD_LAYOUT = re.compile(r"cp:\{([0-9a-f-]{36})\}:(ticket|qr-used|offline-use|upload)(?::(.*))?")


async def adopt_old_key_layout(redis: Redis) -> int:
    """Move per-ticket keys of the layout before shards (`cp:{T}:name:…`) to `cp:{S}:name:T:…`,
    once per Redis: open trips, rides used and used-markers survive the upgrade."""
    if await redis.exists(KEY_LAYOUT):
        return 0
    moved = 0
    async for raw in redis.scan_iter(match="cp:{*}:*", count=1000):
        match = _OLD_LAYOUT.fullmatch(text(raw))
        if match is None:
            continue
        ticket_id, name, rest = match.groups()
        parts = (ticket_id, *rest.split(":")) if rest else (ticket_id,)
        moved += bool(await redis.renamenx(raw, key(name, shard(ticket_id), *parts)))
    await redis.set(KEY_LAYOUT, b"sharded")
    return moved


# Network state: gates, secrets, issuer keys, products, deny list ----------------------------------


async def bump_state(redis: Redis) -> None:
    await redis.incr(STATE_VERSION)


async def state_version(redis: Redis) -> int:
    raw = cast(bytes | None, await redis.get(STATE_VERSION))
    return int(raw) if raw else 0


@dataclass(frozen=True, slots=True)
class PreviousSecret:
    """The secret a rotation replaced, still accepted until `until` (unix seconds)."""

    secret: bytes
    until: int

    @classmethod
    def from_record(cls, raw: bytes) -> PreviousSecret:
        record = orjson.loads(raw)
        return cls(record["secret"].encode(), int(record["until"]))


@dataclass(frozen=True, slots=True)
class NetworkState:
    version: int
    gates: list[GateRead]
    secrets: dict[str, bytes]
    previous_secrets: dict[str, PreviousSecret]
    issuer_keys: dict[str, dict[str, Any]]
    products: dict[str, dict[str, Any]]
    deny: dict[str, dict[str, Any]]


async def load_state(redis: Redis) -> NetworkState:
    """Everything gates need from memory, read in one pipelined round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(STATE_VERSION)
        pipe.hgetall(GATES)
        pipe.hgetall(GATE_SECRETS)
        pipe.hgetall(GATE_PREVIOUS_SECRETS)
        pipe.hgetall(ISSUER_KEYS)
        pipe.hgetall(PRODUCTS)
        pipe.hgetall(DENY)
        version, gates, secrets, previous, keys, products, deny = await pipe.execute()
    return NetworkState(
        version=int(version) if version else 0,
        gates=[GateRead.model_validate_json(raw) for raw in gates.values()],
        secrets={text(k): v for k, v in secrets.items()},
        previous_secrets={text(k): PreviousSecret.from_record(v) for k, v in previous.items()},
        issuer_keys={text(k): orjson.loads(v) for k, v in keys.items()},
        products={text(k): orjson.loads(v) for k, v in products.items()},
        deny={text(k): orjson.loads(v) for k, v in deny.items()},
    )


async def save_gate(redis: Redis, gate: GateRead, secret: str | None = None) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(GATES, gate.gate_id, gate.model_dump_json())
        if secret is not None:
            pipe.hset(GATE_SECRETS, gate.gate_id, secret)
        pipe.incr(STATE_VERSION)
        await pipe.execute()


async def add_gate(redis: Redis, gate: GateRead, secret: str) -> bool:
    """Provision a new gate; False if the id is taken."""
    if not await redis.hsetnx(GATES, gate.gate_id, gate.model_dump_json()):
        return False
    await save_gate(redis, gate, secret)
    return True


async def seed_gate(redis: Redis, gate: GateRead, secret: str) -> None:
    """Demo data: keeps an existing gate's secret, so re-seeding does not lock devices out."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(GATES, gate.gate_id, gate.model_dump_json())
        pipe.hsetnx(GATE_SECRETS, gate.gate_id, secret)
        pipe.incr(STATE_VERSION)
        await pipe.execute()


async def gate_secret(redis: Redis, gate_id: str) -> tuple[str | None, PreviousSecret | None]:
    """The gate's secret and the one its last rotation replaced (however old)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(GATE_SECRETS, gate_id)
        pipe.hget(GATE_PREVIOUS_SECRETS, gate_id)
        secret, previous = await pipe.execute()
    return (
        None if secret is None else text(secret),
        None if previous is None else PreviousSecret.from_record(previous),
    )


async def rotate_gate_secret(
    redis: Redis, gate_id: str, secret: str, previous_until: int | None
) -> bool:
    """Give the gate `secret`; the one it replaces stays accepted until `previous_until` (unix
    seconds; None: not at all). Any older secret is dropped. True if one was kept."""
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(GATE_SECRETS)
                old = cast(bytes | None, await pipe.hget(GATE_SECRETS, gate_id))
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(GATE_SECRETS, gate_id, secret)
                kept = old is not None and previous_until is not None
                if kept:
                    record = {"secret": text(old), "until": previous_until}
                    pipe.hset(GATE_PREVIOUS_SECRETS, gate_id, orjson.dumps(record))
                else:
                    pipe.hdel(GATE_PREVIOUS_SECRETS, gate_id)
                pipe.incr(STATE_VERSION)
                await pipe.execute()
                return kept
            except WatchError:
                continue  # rotated at the same moment elsewhere: replace what that one set


async def list_gates(redis: Redis) -> list[GateRead]:
    raw = cast(dict[bytes, bytes], await redis.hgetall(GATES))
    return sorted((GateRead.model_validate_json(v) for v in raw.values()), key=lambda g: g.gate_id)


async def get_gate(redis: Redis, gate_id: str) -> GateRead | None:
    raw = cast(bytes | None, await redis.hget(GATES, gate_id))
    return GateRead.model_validate_json(raw) if raw else None


async def save_issuer_key(redis: Redis, kid: str, record: dict[str, Any]) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(ISSUER_KEYS, kid, orjson.dumps(record))
        pipe.incr(STATE_VERSION)
        await pipe.execute()


async def replace_issuer_keys(
    redis: Redis, source: str, records: dict[str, dict[str, Any]], as_of: float | None = None
) -> bool:
    """Make the keys from `source` exactly `records`; True if anything changed.

    `as_of` (unix seconds, the source's clock) orders snapshots: one no newer than the last
    applied from that source is ignored, so that a redelivered or replayed
    `issuer_keys.changed` event cannot bring back a set without the key ticketing signs with
    today. Without `as_of` the set applies as it is (ticketing's own answer)."""
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(ISSUER_KEYS, ISSUER_KEYS_AS_OF)
                if as_of is not None:
                    applied = cast(bytes | None, await pipe.hget(ISSUER_KEYS_AS_OF, source))
                    if applied is not None and float(applied) >= as_of:
                        return False  # this set, or a later one, was applied already
                stored = cast(dict[bytes, bytes], await pipe.hgetall(ISSUER_KEYS))
                current = {text(k): orjson.loads(v) for k, v in stored.items()}
                stale = [
                    kid
                    for kid, rec in current.items()
                    if rec.get("source") == source and kid not in records
                ]
                changed = {kid: rec for kid, rec in records.items() if current.get(kid) != rec}
                pipe.multi()  # type: ignore[no-untyped-call]
                if as_of is not None:
                    pipe.hset(ISSUER_KEYS_AS_OF, source, repr(as_of))
                if stale:
                    pipe.hdel(ISSUER_KEYS, *stale)
                for kid, record in changed.items():
                    pipe.hset(ISSUER_KEYS, kid, orjson.dumps(record))
                if stale or changed:
                    pipe.incr(STATE_VERSION)
                await pipe.execute()
                return bool(stale or changed)
            except WatchError:
                continue  # another process changed the keys meanwhile: judge again


async def save_product(redis: Redis, code: str, record: dict[str, Any]) -> bool:
    encoded = orjson.dumps(record)
    if cast(bytes | None, await redis.hget(PRODUCTS, code)) == encoded:
        return False
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(PRODUCTS, code, encoded)
        pipe.incr(STATE_VERSION)
        await pipe.execute()
    return True


async def deny(redis: Redis, entry: str, record: dict[str, Any]) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(DENY, entry, orjson.dumps(record))
        pipe.incr(STATE_VERSION)
        await pipe.execute()


async def lift(redis: Redis, entry: str, reason: str) -> bool:
    """Remove a deny entry, but only one held for `reason` (a revocation outlives a top-up)."""
    raw = cast(bytes | None, await redis.hget(DENY, entry))
    if raw is None or orjson.loads(raw).get("reason") != reason:
        return False
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(DENY, entry)
        pipe.incr(STATE_VERSION)
        await pipe.execute()
    return True


async def drop_expired_deny(redis: Redis, now: int) -> int:
    raw = cast(dict[bytes, bytes], await redis.hgetall(DENY))
    expired = [k for k, v in raw.items() if (until := orjson.loads(v).get("until")) and until < now]
    if expired:
        await redis.hdel(DENY, *expired)
        await bump_state(redis)
    return len(expired)


async def bundle_key(redis: Redis, generated: bytes) -> bytes:
    """The shared development bundle key: the first process to ask sets it."""
    await redis.set(BUNDLE_KEY, generated, nx=True)
    stored = cast(bytes, await redis.get(BUNDLE_KEY))
    return stored


# Tickets, trips, fares (written by the workers, never on the gate's path) -------------------------


async def save_ticket(redis: Redis, ticket_id: str, fields: dict[str, str], expire_at: int) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(ticket_key(ticket_id), mapping=dict(fields.items()))
        pipe.expireat(ticket_key(ticket_id), expire_at)
        await pipe.execute()


async def ticket_wallet(redis: Redis, ticket_id: str) -> str | None:
    raw = cast(bytes | None, await redis.hget(ticket_key(ticket_id), "wallet"))
    return raw.decode() if raw else None


async def save_balance(redis: Redis, ticket_id: str, balance: int) -> None:
    if await redis.exists(ticket_key(ticket_id)):
        await redis.hset(ticket_key(ticket_id), "balance", str(balance))


async def index_open_trip(redis: Redis, ticket_id: str, entry_vid: str, close_at: int) -> None:
    await redis.zadd(OPEN_TRIPS, {f"{ticket_id}|{entry_vid}": close_at})


async def unindex_trip(redis: Redis, ticket_id: str, entry_vid: str) -> None:
    await redis.zrem(OPEN_TRIPS, f"{ticket_id}|{entry_vid}")


async def overdue_trips(redis: Redis, now: int, limit: int = 200) -> list[tuple[str, str]]:
    members = cast(
        list[bytes], await redis.zrangebyscore(OPEN_TRIPS, "-inf", now, start=0, num=limit)
    )
    return [cast(tuple[str, str], tuple(m.decode().split("|", 1))) for m in members]


async def record_unpaid(redis: Redis, wallet_id: str, validation_id: str, charge: bytes) -> None:
    await redis.hset(unpaid_key(wallet_id), validation_id, charge)
    await redis.sadd(UNPAID_WALLETS, wallet_id)


async def wallets_with_unpaid_fares(redis: Redis) -> list[str]:
    members = cast(set[bytes], await redis.smembers(UNPAID_WALLETS))
    return sorted(m.decode() for m in members)


async def unpaid_fares(redis: Redis, wallet_id: str) -> dict[str, bytes]:
    raw = cast(dict[bytes, bytes], await redis.hgetall(unpaid_key(wallet_id)))
    return {k.decode(): v for k, v in raw.items()}


async def settle_unpaid(redis: Redis, wallet_id: str, validation_id: str) -> None:
    await redis.hdel(unpaid_key(wallet_id), validation_id)
    if not await redis.exists(unpaid_key(wallet_id)):
        await redis.srem(UNPAID_WALLETS, wallet_id)
