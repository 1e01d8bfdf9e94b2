"""The Lua scripts of the validation service, each with its contract: the gate decision, the
trip sweeper's closure, offline uploads. Each appends the events of what it did to its shard's
stream in the same atomic step (outbox.py relays them). Called through repository.py only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from shared.redis import PipelinedRedis


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
