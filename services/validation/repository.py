"""Every Redis command of the validation service (it has no database).

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
                                         it (outbox.py); decisions of unreadable QRs go to the
                                         gate's shard
    cp:{trips}:open                zset  "ticket|entry vid" by the time its trip must auto-close
    cp:{W}:unpaid-fares            hash  per wallet: validation id → charge that got 402
    cp:{unpaid}:wallets            set   wallets with unpaid fares (re-checked periodically)
"""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError, WatchError

from services.validation.schemas import GateRead
from shared.devicesigning import nonce_key
from shared.redis import PipelinedRedis, key

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

# Fixed for the life of the data: a ticket's keys and its events' stream live in its shard.
# 32 spreads them over a cluster's primaries while one relay read covers every stream.
SHARDS = 32
_SHARD_TAGS = tuple(f"s{n:02d}" for n in range(SHARDS))


def shard(entity: str) -> str:
    """The hash tag of a ticket's (or, for unreadable codes, a gate's) keys and stream."""
    return _SHARD_TAGS[zlib.crc32(entity.encode()) % SHARDS]


def events_key(tag: str) -> str:
    return key("events", tag)


EVENT_STREAMS = tuple(events_key(tag) for tag in _SHARD_TAGS)


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


class Script:
    """A Lua script run with EVALSHA; loaded at start-up and again if Redis forgot it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def load(self, redis: Redis) -> None:
        await redis.script_load(self.source)

    async def __call__(
        self, redis: Redis, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its script cache
            await self.load(redis)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)

    async def pipelined(
        self, redis: PipelinedRedis, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> Any:
        try:
            return await redis.evalsha(self.sha, keys, args)
        except NoScriptError:
            await redis.execute("SCRIPT", "LOAD", self.source)
            return await redis.evalsha(self.sha, keys, args)


_SPLIT = """
local function split(text)
  local out = {}
  for field in string.gmatch(text .. '|', '([^|]*)|') do out[#out + 1] = field end
  return out
end
"""
_TRIP_FIELDS = "'trip_vid', 'trip_station', 'trip_at', 'trip_gate', 'trip_kind', 'trip_wallet'"

# The gate decision, in one round trip; its event is durable in the same atomic step. Contract:
#   KEYS  1 the gate request's nonce   2 qr-used   3 the ticket's state hash   4 events stream
#   ARGV  1 "now|pre|post|action|place|validation id|kind|rides|gate|expire at|marker expire at",
#           pre  = a verdict before the replay step ('' = none): the QR is not consumed,
#           post = a verdict after it ('' = none): deny list, validity, gate, line,
#           action = entry | exit | both | bus, place = station (metro) or route (bus),
#           kind/rides = the product's rule if ticketing has not announced the ticket
#           (rides -1 = unlimited), expire at = when the state may go (end of validity),
#           marker expire at = when the QR's used-marker may go (timing.py)
#         2 "nonce TTL|max trip seconds|bus passback seconds" (configuration)
#         3 the decision's context (JSON, see decisions.py), appended with the reply
#   Reply "outcome|action|kind|rides left|wallet|balance|closed trip vid|station|entered at|
#          auto-closed trip vid|station|entered at" (empty fields when not applicable), or
#          just the outcome when it was decided before the state was read. outcome is
#          nonce_replayed | <pre> | replayed | <post> | no_rides_left | already_inside |
#          not_inside | ok; rides and trips change only on ok. A stale trip (older than the
#          maximum trip time) is closed whatever the outcome, and reported as auto-closed.
#   Every reply but nonce_replayed is appended to the stream as {k=decision, c=context, r=reply}
#   before the script returns: no gate hears a decision whose event could still be lost.
VALIDATE = Script(
    _SPLIT
    + f"""
local a, c = split(ARGV[1]), split(ARGV[2])
local now = tonumber(a[1])
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', c[1]) then return 'nonce_replayed' end
local function record(out)
  redis.call('XADD', KEYS[4], '*', 'k', 'decision', 'c', ARGV[3], 'r', out)
  return out
end
if a[2] ~= '' then return record(a[2]) end
if not redis.call('SET', KEYS[2], a[9] .. '|' .. a[6], 'NX', 'EXAT', a[11]) then
  return record('replayed')
end
if a[3] ~= '' then return record(a[3]) end
local s = redis.call('HMGET', KEYS[3], 'kind', 'rides', 'wallet', 'balance', 'used',
                     'trip_vid', 'trip_station', 'trip_at')
local kind, rides = s[1] or a[7], tonumber(s[2] or a[8])
local wallet, balance, used = s[3] or '', s[4] or '', tonumber(s[5] or '0')
local action = a[4]
local auto = {{'', '', ''}}
local function reply(outcome, closed)
  local left = ''
  if rides >= 0 then left = tostring(rides - used) end
  closed = closed or {{'', '', ''}}
  return record(table.concat({{outcome, action, kind, left, wallet, balance, closed[1],
                              closed[2], closed[3], auto[1], auto[2], auto[3]}}, '|'))
end
local function consume()
  if rides >= 0 then used = redis.call('HINCRBY', KEYS[3], 'used', 1) end
  if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIREAT', KEYS[3], a[10]) end
end
if action == 'bus' then
  action = 'tap'
  if rides >= 0 and used >= rides then return reply('no_rides_left') end
  local last = redis.call('HGET', KEYS[3], 'bus:' .. a[5])
  if last and now - tonumber(last) <= tonumber(c[3]) then return reply('already_inside') end
  redis.call('HSET', KEYS[3], 'bus:' .. a[5], a[1])
  consume()
  return reply('ok')
end
local open = s[6] ~= false
if open and now - tonumber(s[8]) > tonumber(c[2]) then
  redis.call('HDEL', KEYS[3], {_TRIP_FIELDS})
  auto = {{s[6], s[7], s[8]}}
  open = false
end
if action == 'both' then
  if open then action = 'exit' else action = 'entry' end
end
if action == 'entry' then
  if rides >= 0 and used >= rides then return reply('no_rides_left') end
  if open then return reply('already_inside') end
  redis.call('HSET', KEYS[3], 'trip_vid', a[6], 'trip_station', a[5], 'trip_at', a[1],
             'trip_gate', a[9], 'trip_kind', kind, 'trip_wallet', wallet)
  consume()
  return reply('ok')
end
if not open then return reply('not_inside') end
redis.call('HDEL', KEYS[3], {_TRIP_FIELDS})
return reply('ok', {{s[6], s[7], s[8]}})
"""
)

# Close a trip left open (the sweeper), only if it is still the one that was indexed.
#   KEYS 1 ticket state   2 events stream
#   ARGV 1 entry validation id   2 context (JSON: ticket id, closed at)
#   Reply {station, entered at, kind, wallet}, or nil when that trip is no longer open; the
#   closure is appended to the stream as {k=closed, c=context, r="station|at|kind|wallet"}.
CLOSE_TRIP = Script(
    f"""
local t = redis.call('HMGET', KEYS[1], 'trip_vid', 'trip_station', 'trip_at', 'trip_kind',
                     'trip_wallet')
if t[1] ~= ARGV[1] then return false end
redis.call('HDEL', KEYS[1], {_TRIP_FIELDS})
local out = {{t[2], t[3], t[4] or '', t[5] or ''}}
redis.call('XADD', KEYS[2], '*', 'k', 'closed', 'c', ARGV[2], 'r', table.concat(out, '|'))
return out
"""
)

# Reconcile one decision an offline gate uploads. Contract:
#   KEYS  1 upload marker   2 offline-use   3 qr-used (online)   4 ticket state   5 events stream
#   ARGV  1 validation id   2 gate id   3 '1' if the gate accepted   4 action entry|exit|tap|none
#         5 station   6 scanned at (unix s)   7 markers expire at (unix s)   8 state expiry
#         9 kind if unknown   10 rides if unknown (-1 = unlimited)   11 context (JSON)
#   Reply {'duplicate'} or {'recorded', kind, wallet, closed trip vid, station, at,
#          other accepted uses of the same QR as "gate|validation id"...}; a recorded upload is
#   appended to the stream as {k=upload, c=context, r=the reply as JSON}. An accepted use also
#   becomes the QR's used-marker if it has none, so that the code is refused online after it.
RECONCILE = Script(
    f"""
if not redis.call('SET', KEYS[1], '1', 'NX', 'EXAT', ARGV[7]) then return {{'duplicate'}} end
local info = redis.call('HMGET', KEYS[4], 'kind', 'rides', 'wallet')
local kind = info[1] or ARGV[9]
local rides = tonumber(info[2] or ARGV[10])
local reply = {{'recorded', kind, info[3] or '', '', '', ''}}
local function record()
  redis.call('XADD', KEYS[5], '*', 'k', 'upload', 'c', ARGV[11], 'r', cjson.encode(reply))
  return reply
end
if ARGV[3] ~= '1' then return record() end
local own = ARGV[2] .. '|' .. ARGV[1]
local seen = {{[own] = true}}
local prior = redis.call('HGETALL', KEYS[2])
for i = 1, #prior, 2 do
  local use = prior[i] .. '|' .. prior[i + 1]
  if not seen[use] then table.insert(reply, use); seen[use] = true end
end
local online = redis.call('GET', KEYS[3])
if online then
  if not seen[online] then table.insert(reply, online) end
else
  redis.call('SET', KEYS[3], own, 'EXAT', ARGV[7])
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIREAT', KEYS[2], ARGV[7])
local action = ARGV[4]
if (action == 'entry' or action == 'tap') and rides >= 0 then
  redis.call('HINCRBY', KEYS[4], 'used', 1)
end
if action == 'entry' and not redis.call('HGET', KEYS[4], 'trip_vid') then
  redis.call('HSET', KEYS[4], 'trip_vid', ARGV[1], 'trip_station', ARGV[5], 'trip_at', ARGV[6],
             'trip_gate', ARGV[2], 'trip_kind', kind, 'trip_wallet', info[3] or '')
elseif action == 'exit' then
  local t = redis.call('HMGET', KEYS[4], 'trip_vid', 'trip_station', 'trip_at')
  if t[1] then
    redis.call('HDEL', KEYS[4], {_TRIP_FIELDS})
    reply[4], reply[5], reply[6] = t[1], t[2], t[3]
  end
end
if redis.call('TTL', KEYS[4]) == -1 then redis.call('EXPIREAT', KEYS[4], ARGV[8]) end
return record()
"""
)

# An uploaded decision whose code cannot be read: recorded once under its gate.
#   KEYS 1 upload marker   2 events stream   ARGV 1 TTL   2 context (JSON)
#   Reply 1 when recorded (and appended to the stream as {k=upload, r=["recorded"]}), else 0
MARK_UPLOAD = Script(
    """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], '*', 'k', 'upload', 'c', ARGV[2], 'r', '["recorded"]')
return 1
"""
)

SCRIPTS = (VALIDATE, CLOSE_TRIP, RECONCILE, MARK_UPLOAD)


async def load_scripts(redis: Redis) -> None:
    for script in SCRIPTS:
        await script.load(redis)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


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


async def validate(
    redis: PipelinedRedis,
    *,
    tag: str,
    ticket_id: str,
    gate_id: str,
    nonce: str,
    at: int,
    counter: int,
    decision: str,
    settings: str,
    context: bytes,
) -> StateOutcome:
    """`decision` is ARGV 1 of the decision script (see its contract); `tag` is the shard of
    the ticket (of the gate when the code could not be read: then only the nonce is used)."""
    keys = (
        nonce_key(gate_id, nonce, tag=tag),
        key("qr-used", tag, ticket_id, str(at), str(counter)),
        key("ticket", tag, ticket_id),
        events_key(tag),
    )
    raw = await VALIDATE.pipelined(redis, keys, (decision, settings, context))
    return parse_outcome(raw.decode() if isinstance(raw, bytes) else raw)


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
    station, at, kind, wallet = (_text(item) for item in reply)
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
    reply = [_text(item) for item in await RECONCILE(redis, keys, args)]
    return None if reply[0] == "duplicate" else reply


async def mark_upload(
    redis: Redis, gate_id: str, validation_id: str, ttl_s: int, context: bytes
) -> bool:
    """An uploaded decision without a readable ticket, recorded once under its gate."""
    tag = shard(gate_id)
    keys = (key("upload", tag, gate_id, validation_id), events_key(tag))
    return bool(await MARK_UPLOAD(redis, keys, (ttl_s, context)))


# The events stream of each shard (outbox.py relays them to Kafka) -------------------------------


async def append_event(redis: Redis, tag: str, record: bytes) -> None:
    await redis.xadd(events_key(tag), {"k": "event", "c": record})


StreamEntry = tuple[str, str, dict[bytes, bytes]]  # stream, entry id, fields


async def ensure_relay_group(redis: Redis, group: str) -> None:
    """The relays' consumer group on every stream, from the start: entries are deleted once
    relayed, so whatever is in a stream has not reached Kafka yet."""
    for stream in EVENT_STREAMS:
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


async def read_events(
    redis: Redis, group: str, consumer: str, *, pending: bool, count: int, block_ms: int | None
) -> list[StreamEntry]:
    """New entries (`pending=False`), or those this consumer read and has not acknowledged."""
    start = "0" if pending else ">"
    streams: dict[Any, Any] = dict.fromkeys(EVENT_STREAMS, start)
    reply = cast(
        list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None,
        await redis.xreadgroup(group, consumer, streams, count=count, block=block_ms),
    )
    return [
        (_text(stream), _text(entry_id), fields)
        for stream, entries in reply or []
        for entry_id, fields in entries
        if fields  # a pending entry deleted meanwhile comes back without fields
    ]


async def relayed(redis: Redis, group: str, entries: Sequence[StreamEntry]) -> None:
    """Kafka has these: acknowledge and delete them, in one round trip."""
    by_stream: dict[str, list[str]] = {}
    for stream, entry_id, _ in entries:
        by_stream.setdefault(stream, []).append(entry_id)
    async with redis.pipeline(transaction=False) as pipe:
        for stream, ids in by_stream.items():
            pipe.xack(stream, group, *ids)
            pipe.xdel(stream, *ids)
        await pipe.execute()


async def park_unreadable(redis: Redis, entries: Sequence[StreamEntry]) -> None:
    """Entries the relay cannot turn into events (a newer version's, during a rolling
    upgrade): copied to `cp:{S}:events-unreadable` for a person before they leave the stream."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream, _, fields in entries:
            pipe.xadd(stream + "-unreadable", cast(dict[Any, Any], fields))
        await pipe.execute()


async def claim_abandoned(
    redis: Redis, group: str, consumer: str, min_idle_ms: int, count: int
) -> int:
    """Take over entries another relay read and never acknowledged (it died)."""
    claimed = 0
    for stream in EVENT_STREAMS:
        reply = await redis.xautoclaim(stream, group, consumer, min_idle_ms, "0-0", count=count)
        claimed += len(reply[1])
    return claimed


async def forget_gone_relays(redis: Redis, group: str, consumer: str, idle_ms: int) -> int:
    """Consumers of processes long gone, with nothing pending (every restart of a process with
    a new instance id leaves one behind)."""
    gone = 0
    for stream in EVENT_STREAMS:
        for info in await redis.xinfo_consumers(stream, group):
            name = _text(info["name"])
            if name != consumer and info["pending"] == 0 and info["idle"] > idle_ms:
                gone += await redis.xgroup_delconsumer(stream, group, name) >= 0
    return gone


async def event_backlog(redis: Redis) -> int:
    """Events not yet acknowledged by Kafka, over every shard."""
    return (await outbox_state(redis, time.time()))[0]


async def outbox_state(redis: Redis, now: float) -> tuple[int, float]:
    """(entries waiting over every shard, age in seconds of the oldest): an entry's id is the
    Redis time it was appended, in milliseconds."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in EVENT_STREAMS:
            pipe.xlen(stream)
            pipe.xrange(stream, count=1)
        replies = await pipe.execute()
    waiting = sum(replies[0::2])
    firsts = [int(_text(first[0][0]).split("-")[0]) for first in replies[1::2] if first]
    return waiting, max(0.0, now - min(firsts) / 1000) if firsts else 0.0


_OLD_LAYOUT = re.compile(r"cp:\{([0-9a-f-]{36})\}:(ticket|qr-used|offline-use|upload)(?::(.*))?")


async def adopt_old_key_layout(redis: Redis) -> int:
    """Move per-ticket keys of the layout before shards (`cp:{T}:name:…`) to `cp:{S}:name:T:…`,
    once per Redis: open trips, rides used and used-markers survive the upgrade."""
    if await redis.exists(KEY_LAYOUT):
        return 0
    moved = 0
    async for raw in redis.scan_iter(match="cp:{*}:*", count=1000):
        match = _OLD_LAYOUT.fullmatch(_text(raw))
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
        secrets={_text(k): v for k, v in secrets.items()},
        previous_secrets={_text(k): PreviousSecret.from_record(v) for k, v in previous.items()},
        issuer_keys={_text(k): orjson.loads(v) for k, v in keys.items()},
        products={_text(k): orjson.loads(v) for k, v in products.items()},
        deny={_text(k): orjson.loads(v) for k, v in deny.items()},
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
        None if secret is None else _text(secret),
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
                    record = {"secret": _text(old), "until": previous_until}
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
                current = {_text(k): orjson.loads(v) for k, v in stored.items()}
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
