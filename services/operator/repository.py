"""Every Redis command of the operator service (it has no database).

All keys carry the hash tag `{ops}`: one Redis Cluster slot, so that applying an event (its
dedup marker, counters, latest values, alert and tail line) is one atomic script. The
console's write rate (every event of the city, ~1 k/s at peak) fits one node with room.

    cp:{ops}:operators              hash    username → {password_hash, role}
    cp:{ops}:seen:<event id>        str     the event was applied (dedup), TTL `dedup_ttl`
    cp:{ops}:count-minute:<unix min>     hash  "v|<place>|accepted|rejected" per minute, 2 h
    cp:{ops}:count-ten_minutes:<n>  hash    "r|<reason>" rejections per 10 minutes, 26 h
    cp:{ops}:count-hour:<unix hour> hash    "rev|<source>" revenue (VND) per hour, 26 h
    cp:{ops}:count-day:<YYYY-MM-DD> hash    Hanoi-day totals: validations, reasons, revenue
                                            per source and lot, tickets, parking, alerts; 3 days
    cp:{ops}:gates                  hash    gate id → last seen, station, last decision (JSON)
    cp:{ops}:lots                   hash    "<lot>|<vehicle type>" → occupancy (JSON), the
                                            highest `sequence` wins
    cp:{ops}:tail                   stream  the live tail (capped at `tail_max_entries`)
    cp:{ops}:alerts                 hash    alert id → alert (JSON)
    cp:{ops}:alert-index            zset    alert id by raised time (the latest 2,000 kept)
    cp:{ops}:alert-open             zset    the alerts nobody acknowledged yet
    cp:{ops}:window:<rule window>   zset    event ids by time, for windowed alert rules
    cp:{ops}:memory:<name>          str     what alert rules remember (cooldowns, last station)
    cp:{ops}:stream-ticket:<sha256> str     one-time ticket for the event stream, TTL 30 s
    cp:{ops}:pipeline               str     the latest pipeline-health snapshot (JSON)
    cp:{ops}:inventory:<gates|lots> str     the provisioned gates / lots as their owners last
                                            listed them (inventory.Listing JSON)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from services.operator.alerts import Window
from services.operator.inventory import Kind, Listing
from services.operator.projection import (
    AcknowledgeAlert,
    Bucket,
    Increment,
    Latest,
    StoreAlert,
    Table,
    Update,
    parse_time,
)
from shared.redis import key

OPS = "ops"
OPERATORS = key("operators", OPS)  # hash: username → {"password_hash", "role"}
TAIL = key("tail", OPS)
ALERTS = key("alerts", OPS)
ALERT_INDEX = key("alert-index", OPS)
ALERT_OPEN = key("alert-open", OPS)
PIPELINE = key("pipeline", OPS)
TABLES = {Table.gates: key("gates", OPS), Table.lots: key("lots", OPS)}
ALERTS_KEPT = 2_000
BUCKET_TTL_S = {
    Bucket.minute: 2 * 3600,
    Bucket.ten_minutes: 26 * 3600,
    Bucket.hour: 26 * 3600,
    Bucket.day: 3 * 86_400,
}


def inventory_key(kind: Kind) -> str:
    return key("inventory", OPS, kind.value)


def seen_key(event_id: str) -> str:
    return key("seen", OPS, event_id)


def bucket_key(bucket: Bucket, stamp: str) -> str:
    return key(f"count-{bucket.value}", OPS, stamp)


def window_key(name: str) -> str:
    return key("window", OPS, name)


def memory_key(name: str) -> str:
    return key("memory", OPS, name)


def stream_ticket_key(ticket: str) -> str:
    # Only a digest is stored: a Redis dump does not hand out live stream tickets.
    return key("stream-ticket", OPS, hashlib.sha256(ticket.encode()).hexdigest())


# Operators --------------------------------------------------------------------------------------


async def save_operator(redis: Redis, username: str, password_hash: str, role: str) -> None:
    record = orjson.dumps({"password_hash": password_hash, "role": role})
    await redis.hset(OPERATORS, username, record)


async def get_operator(redis: Redis, username: str) -> dict[str, str] | None:
    raw = cast(bytes | None, await redis.hget(OPERATORS, username))
    if raw is None:
        return None
    record: dict[str, str] = orjson.loads(raw)
    return record


# Applying an event ------------------------------------------------------------------------------

# KEYS 1 seen marker  2 tail stream  3 alerts  4 alert index  5 open alerts
#      6.. the keys `ops` name (by index)
# ARGV 1 JSON {ttl: seen TTL, tail: entry JSON or "", maxlen, kept: alerts kept,
#              ops: [[name, key index, args…]], expire: [[key index, seconds]]}
# Returns the tail entry's stream id, "applied" without a tail line, or false for a duplicate.
APPLY = """
local spec = cjson.decode(ARGV[1])
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', spec.ttl) then return false end
for _, op in ipairs(spec.ops) do
  local k = KEYS[op[2]]
  if op[1] == 'incr' then
    redis.call('HINCRBY', k, op[3], op[4])
  elseif op[1] == 'latest' then
    local current = redis.call('HGET', k, op[3])
    if (not current) or tonumber(cjson.decode(current).order) <= tonumber(op[4]) then
      redis.call('HSET', k, op[3], op[5])
    end
  elseif op[1] == 'alert' then
    if redis.call('HSETNX', KEYS[3], op[3], op[4]) == 1 then
      redis.call('ZADD', KEYS[4], op[5], op[3])
      redis.call('ZADD', KEYS[5], op[5], op[3])
      local excess = redis.call('ZCARD', KEYS[4]) - tonumber(spec.kept)
      if excess > 0 then
        local old = redis.call('ZRANGE', KEYS[4], 0, excess - 1)
        redis.call('ZREMRANGEBYRANK', KEYS[4], 0, excess - 1)
        redis.call('HDEL', KEYS[3], unpack(old))
        redis.call('ZREM', KEYS[5], unpack(old))
      end
    end
  elseif op[1] == 'remember' then
    redis.call('SET', k, op[3], 'EX', op[4])
  elseif op[1] == 'ack' then
    local current = redis.call('HGET', KEYS[3], op[3])
    if current then
      local alert = cjson.decode(current)
      if alert.acknowledged_at == nil or alert.acknowledged_at == cjson.null then
        alert.acknowledged_at = op[4]
        alert.acknowledged_by = op[5]
        redis.call('HSET', KEYS[3], op[3], cjson.encode(alert))
        redis.call('ZREM', KEYS[5], op[3])
      end
    end
  end
end
for _, e in ipairs(spec.expire) do redis.call('EXPIRE', KEYS[e[1]], e[2]) end
if spec.tail ~= '' then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', spec.maxlen, '*', 'entry', spec.tail)
end
return 'applied'
"""
APPLY_SHA = hashlib.sha1(APPLY.encode()).hexdigest()


class _Keys:
    def __init__(self, first: Sequence[str]) -> None:
        self.names: list[str] = list(first)
        self.index: dict[str, int] = {name: i + 1 for i, name in enumerate(self.names)}

    def of(self, name: str) -> int:
        if name not in self.index:
            self.names.append(name)
            self.index[name] = len(self.names)
        return self.index[name]


def _script_spec(
    event_id: str,
    items: Iterable[Update],
    tail: dict[str, Any] | None,
    remember: Mapping[str, tuple[str, float]],
    *,
    seen_ttl_s: int,
    tail_max: int,
) -> tuple[list[str], bytes]:
    keys = _Keys([seen_key(event_id), TAIL, ALERTS, ALERT_INDEX, ALERT_OPEN])
    ops: list[list[Any]] = []
    expire: dict[int, int] = {}
    for item in items:
        if isinstance(item, Increment):
            index = keys.of(bucket_key(item.bucket, item.stamp))
            ops.append(["incr", index, item.field, str(item.amount)])
            expire[index] = BUCKET_TTL_S[item.bucket]
        elif isinstance(item, Latest):
            value = orjson.dumps(item.value | {"order": item.order}).decode()
            ops.append(["latest", keys.of(TABLES[item.table]), item.field, repr(item.order), value])
        elif isinstance(item, StoreAlert):
            alert = item.alert
            raised = _unix(alert.get("raised_at"))
            ops.append(["alert", 3, alert["alert_id"], orjson.dumps(alert).decode(), repr(raised)])
        elif isinstance(item, AcknowledgeAlert):
            ops.append(["ack", 3, item.alert_id, item.at, item.by])
    for name, (value, ttl_s) in remember.items():
        ops.append(["remember", keys.of(memory_key(name)), value, str(max(1, int(ttl_s)))])
    spec = {
        "ttl": seen_ttl_s,
        "tail": orjson.dumps(tail).decode() if tail is not None else "",
        "maxlen": str(tail_max),
        "kept": str(ALERTS_KEPT),
        "ops": ops,
        "expire": [[index, ttl] for index, ttl in expire.items()],
    }
    return keys.names, orjson.dumps(spec)


def _unix(value: Any) -> float:
    return parse_time(value) or 0.0


async def apply(
    redis: Redis,
    event_id: str,
    items: Iterable[Update],
    tail: dict[str, Any] | None,
    *,
    seen_ttl_s: int,
    tail_max: int,
    remember: Mapping[str, tuple[str, float]] | None = None,
) -> bool:
    """Apply an event's updates, tail line and what the alert rules remember about it, once;
    False when it was applied before."""
    keys, spec = _script_spec(
        event_id, items, tail, remember or {}, seen_ttl_s=seen_ttl_s, tail_max=tail_max
    )
    try:
        result = await redis.evalsha(APPLY_SHA, len(keys), *keys, spec)
    except NoScriptError:  # Redis restarted or flushed its scripts
        result = await redis.eval(APPLY, len(keys), *keys, spec)
    return result is not None


async def load_scripts(redis: Redis) -> None:
    await redis.script_load(APPLY)
    await redis.script_load(RULE_INPUTS)


# Alert rule state -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleInputs:
    seen: bool
    counts: dict[str, int]
    memory: dict[str, str]


# The inputs of the alert rules for one event, in one round trip.
# KEYS 1 seen marker   2..n+1 the event's windows   n+2.. the rules' memory keys
# ARGV 1 event id   2 its time   3 n   4 now (members older than twice a window are dropped)
#      5..n+4 each window's span in seconds
# Returns {1 if already applied, each window's count, each memory value ('' = none)}. A count
# is the number of events within the span up to the newest one in the window: events of
# several partitions arrive out of order, so the window that matters ends at the newest event.
# Adding an event twice changes nothing (its id is the member).
RULE_INPUTS = """
local n = tonumber(ARGV[3])
local out = {redis.call('EXISTS', KEYS[1])}
for i = 1, n do
  local key, span = KEYS[1 + i], tonumber(ARGV[4 + i])
  redis.call('ZADD', key, ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (tonumber(ARGV[4]) - 2 * span))
  local newest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
  redis.call('EXPIRE', key, math.ceil(span) + 60)
  out[#out + 1] = redis.call('ZCOUNT', key, newest - span, newest)
end
for i = n + 2, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i]) or ''
end
return out
"""
RULE_INPUTS_SHA = hashlib.sha1(RULE_INPUTS.encode()).hexdigest()


async def rule_inputs(
    redis: Redis,
    event_id: str,
    at: float,
    now: float,
    windows: Sequence[Window],
    memory: Sequence[str],
) -> RuleInputs:
    """Whether the event was applied, its windows' counts (it included) and the memory."""
    keys = [
        seen_key(event_id),
        *(window_key(w.key) for w in windows),
        *(memory_key(name) for name in memory),
    ]
    args = [event_id, repr(at), str(len(windows)), repr(min(at, now))]
    args += [repr(w.seconds) for w in windows]
    try:
        reply = await redis.evalsha(RULE_INPUTS_SHA, len(keys), *keys, *args)
    except NoScriptError:  # Redis restarted or flushed its scripts
        reply = await redis.eval(RULE_INPUTS, len(keys), *keys, *args)
    values = reply[1 + len(windows) :]
    return RuleInputs(
        seen=bool(reply[0]),
        counts={w.key: int(reply[1 + i]) for i, w in enumerate(windows)},
        memory={name: v.decode() for name, v in zip(memory, values, strict=True) if v},
    )


async def read_memory(redis: Redis, names: Sequence[str]) -> dict[str, str]:
    if not names:
        return {}
    values = await redis.mget([memory_key(name) for name in names])
    return {
        name: v.decode()
        for name, v in zip(names, cast(list[bytes | None], values), strict=True)
        if v is not None
    }


async def remember(redis: Redis, values: dict[str, tuple[str, float]]) -> None:
    if not values:
        return
    pipe = redis.pipeline(transaction=False)
    for name, (value, ttl_s) in values.items():
        pipe.set(memory_key(name), value, ex=max(1, int(ttl_s)))
    await pipe.execute()


# Reading the dashboard --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DashboardData:
    minutes: list[dict[str, int]]
    ten_minutes: list[dict[str, int]]
    hours: list[dict[str, int]]
    day: dict[str, int]
    gates: dict[str, dict[str, Any]]
    lots: dict[str, dict[str, Any]]
    open_alerts: int
    listed_gates: Listing
    listed_lots: Listing


async def read_dashboard(
    redis: Redis,
    minutes: Sequence[str],
    ten_minutes: Sequence[str],
    hours: Sequence[str],
    day: str,
) -> DashboardData:
    """Everything the dashboard shows, in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for bucket, stamps in (
        (Bucket.minute, minutes),
        (Bucket.ten_minutes, ten_minutes),
        (Bucket.hour, hours),
        (Bucket.day, [day]),
    ):
        for stamp in stamps:
            pipe.hgetall(bucket_key(bucket, stamp))
    pipe.hgetall(TABLES[Table.gates])
    pipe.hgetall(TABLES[Table.lots])
    pipe.zcard(ALERT_OPEN)
    pipe.get(inventory_key(Kind.gates))
    pipe.get(inventory_key(Kind.lots))
    *replies, listed_gates, listed_lots = await pipe.execute()
    counters = [{k.decode(): int(v) for k, v in reply.items()} for reply in replies[:-3]]
    a, b, c = (
        len(minutes),
        len(minutes) + len(ten_minutes),
        len(minutes) + len(ten_minutes) + len(hours),
    )
    return DashboardData(
        minutes=counters[:a],
        ten_minutes=counters[a:b],
        hours=counters[b:c],
        day=counters[c],
        gates={k.decode(): orjson.loads(v) for k, v in replies[-3].items()},
        lots={k.decode(): orjson.loads(v) for k, v in replies[-2].items()},
        open_alerts=int(replies[-1]),
        listed_gates=_listing(listed_gates),
        listed_lots=_listing(listed_lots),
    )


def _listing(raw: bytes | None) -> Listing:
    return Listing() if raw is None else Listing.model_validate_json(raw)


async def load_listing(redis: Redis, kind: Kind) -> Listing:
    return _listing(cast(bytes | None, await redis.get(inventory_key(kind))))


async def save_listing(redis: Redis, kind: Kind, listing: Listing) -> None:
    """Kept without expiry: when the owner cannot answer, its last list still stands."""
    await redis.set(inventory_key(kind), listing.model_dump_json())


async def read_table(redis: Redis, table: Table) -> dict[str, dict[str, Any]]:
    raw = cast(dict[bytes, bytes], await redis.hgetall(TABLES[table]))
    return {k.decode(): orjson.loads(v) for k, v in raw.items()}


async def get_alert(redis: Redis, alert_id: str) -> dict[str, Any] | None:
    raw = cast(bytes | None, await redis.hget(ALERTS, alert_id))
    return None if raw is None else cast(dict[str, Any], orjson.loads(raw))


async def recent_alerts(redis: Redis, limit: int) -> list[dict[str, Any]]:
    """The latest alerts, newest first."""
    ids = cast(list[bytes], await redis.zrevrange(ALERT_INDEX, 0, limit - 1))
    if not ids:
        return []
    raw = cast(list[bytes | None], await redis.hmget(ALERTS, ids))
    return [orjson.loads(r) for r in raw if r is not None]


# The live tail ----------------------------------------------------------------------------------

TailEntry = tuple[str, dict[str, Any]]
MAX_ID_PART = 2**64 - 1


def valid_stream_id(value: str) -> bool:
    """A stream id Redis accepts as an exclusive bound (`<ms>-<seq>`, each < 2^64, not 0-0)."""
    millis, dash, seq = value.partition("-")
    if not (dash and millis.isdigit() and seq.isdigit()):
        return False
    return (
        int(millis) <= MAX_ID_PART and int(seq) <= MAX_ID_PART and (int(millis), int(seq)) != (0, 0)
    )


RawEntries = list[tuple[bytes, dict[bytes, bytes]]]


def _entries(raw: Any) -> list[TailEntry]:
    return [(sid.decode(), orjson.loads(fields[b"entry"])) for sid, fields in cast(RawEntries, raw)]


async def tail_last_id(redis: Redis) -> str:
    raw = cast(RawEntries, await redis.xrevrange(TAIL, count=1))
    return raw[0][0].decode() if raw else "0-0"


async def tail_after(redis: Redis, after: str, count: int) -> list[TailEntry]:
    """Entries newer than stream id `after`, oldest first."""
    return _entries(await redis.xrange(TAIL, min=f"({after}", count=count))


async def tail_read(redis: Redis, after: str, block_ms: int, count: int) -> list[TailEntry]:
    """Wait up to `block_ms` for entries newer than `after`."""
    reply = cast(
        list[tuple[bytes, RawEntries]],
        await redis.xread({TAIL: after}, count=count, block=block_ms),
    )
    if not reply:
        return []
    return _entries(reply[0][1])


async def tail_newest(redis: Redis, before: str, count: int) -> list[TailEntry]:
    """Up to `count` entries older than `before` ("+" for the newest), newest first."""
    upper = "+" if before == "+" else f"({before}"
    return _entries(await redis.xrevrange(TAIL, max=upper, count=count))


# Stream tickets and the pipeline snapshot -------------------------------------------------------


async def save_stream_ticket(redis: Redis, ticket: str, claims: dict[str, Any], ttl_s: int) -> None:
    await redis.set(stream_ticket_key(ticket), orjson.dumps(claims), ex=ttl_s)


async def take_stream_ticket(redis: Redis, ticket: str) -> dict[str, Any] | None:
    raw = cast(bytes | None, await redis.getdel(stream_ticket_key(ticket)))
    return None if raw is None else cast(dict[str, Any], orjson.loads(raw))


async def save_pipeline(redis: Redis, snapshot: dict[str, Any], ttl_s: int) -> None:
    await redis.set(PIPELINE, orjson.dumps(snapshot), ex=ttl_s)


async def load_pipeline(redis: Redis) -> dict[str, Any] | None:
    raw = cast(bytes | None, await redis.get(PIPELINE))
    return None if raw is None else cast(dict[str, Any], orjson.loads(raw))
