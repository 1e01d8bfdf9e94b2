"""Background work of a validation process, never on a gate's path.

- state refresh: reload gates, keys, products and the deny list when Redis says they changed;
- issuer keys: poll ticketing's `GET /v1/keys`;
- ticket events (a consumer group per process): ticket registry, products, deny list;
- fares (groups `validation-fares`, `validation-topups`): fare_worker.py;
- the trip sweeper: trips open longer than the maximum trip time close at the maximum fare;
- the deny-list clean-up: revocations whose end (`until`) has passed are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import httpx
import orjson
from aiokafka import ConsumerRecord
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.validation import events, repository
from services.validation.events import unix
from services.validation.memory import IssuerKey, Memory, b64url, decode_public_key
from services.validation.outbox import Outbox
from services.validation.rules import Reason, TicketKind, device_fingerprint
from services.validation.schemas import IssuerKeyStatus
from services.validation.service import TICKET_LIFETIME_MARGIN_S
from services.validation.settings import ValidationSettings
from shared.events import (
    DEVICE_REVOKED,
    FARE_SETTLED,
    FARE_UNPAID,
    ISSUER_KEYS_CHANGED,
    TICKET_ISSUED,
    TICKET_REVOKED,
    Event,
)
from shared.health import raise_if_cancelled
from shared.http import service_client

logger = logging.getLogger("citypass.validation.tasks")

DENY_CLEANUP_S = 600.0
TICKETING_SOURCE = "ticketing"
SETTINGS_SOURCE = "settings"


def key_records(payload: Any) -> dict[str, dict[str, Any]]:
    """Ticketing's `/v1/keys` answer (a list, or `{"keys": [...]}`) as stored key records."""
    items = payload.get("keys", []) if isinstance(payload, dict) else payload
    records: dict[str, dict[str, Any]] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
            continue
        try:
            raw = decode_public_key(str(item.get("public_key", "")))
        except ValueError:
            logger.warning("ticketing key %s has no usable public key", item["kid"])
            continue
        status = str(item.get("status", "active")).lower()
        if status not in {s.value for s in IssuerKeyStatus}:
            status = IssuerKeyStatus.retired.value  # a status we do not know is not trusted
        records[item["kid"]] = {
            "public_key": b64url(raw),
            "status": status,
            "not_after": unix(item.get("not_after")),
            "source": TICKETING_SOURCE,
        }
    return records


class Workers:
    def __init__(
        self,
        settings: ValidationSettings,
        redis: Redis,
        memory: Memory,
        outbox: Outbox,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.memory = memory
        self.outbox = outbox
        self.max_trip_s = int(settings.max_trip.total_seconds())
        self._failing: set[str] = set()
        self._keys_changed = asyncio.Event()  # ticketing said so: ask it now

    def _log_failure(self, what: str, exc: BaseException) -> None:
        if what not in self._failing:  # once per outage, not once per second
            self._failing.add(what)
            logger.warning("%s failing: %s", what, exc or type(exc).__name__)

    def _recovered(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            logger.info("%s recovered", what)

    # Network state --------------------------------------------------------------------------

    async def load_configured_keys(self) -> None:
        """This process's configured issuer keys, into its memory only. Earlier versions kept
        them in Redis, where each replica replaced the others' set: those entries go."""
        self.memory.configured_keys = {
            k.kid: IssuerKey(
                kid=k.kid,
                public_key=decode_public_key(k.public_key),
                status=IssuerKeyStatus.active,
                not_after=k.not_after,
                source=SETTINGS_SOURCE,
            )
            for k in self.settings.issuer_keys
        }
        await repository.replace_issuer_keys(self.redis, SETTINGS_SOURCE, {})

    async def refresh_state(self) -> None:
        interval = self.settings.state_refresh.total_seconds()
        while True:
            raise_if_cancelled()
            try:
                now = int(time.time())
                if await repository.state_version(self.redis) != self.memory.version:
                    self.memory.apply(await repository.load_state(self.redis), now)
                else:
                    self.memory.refresh_usable_keys(now)  # a key's not_after may have passed
                self._recovered("state refresh")
            except (RedisError, OSError) as exc:
                self._log_failure("state refresh", exc)
            await asyncio.sleep(interval)

    async def poll_issuer_keys(self) -> None:
        if not self.settings.ticketing_url:
            return
        interval = self.settings.keys_refresh.total_seconds()
        async with service_client(self.settings.ticketing_url, timeout_s=5) as http:
            while True:
                raise_if_cancelled()
                try:
                    self._keys_changed.clear()
                    response = await http.get("/v1/keys")
                    response.raise_for_status()
                    records = key_records(response.json())
                    if await repository.replace_issuer_keys(self.redis, TICKETING_SOURCE, records):
                        self.memory.apply(await repository.load_state(self.redis), int(time.time()))
                    self._recovered("issuer keys from ticketing")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._keys_changed.wait(), interval)
                except (httpx.HTTPError, ValueError, RedisError, OSError) as exc:
                    self._log_failure("issuer keys from ticketing", exc)
                    # Ticketing may still be starting: ask again soon, not a whole interval later.
                    await asyncio.sleep(min(interval, 2.0))

    # transit.tickets: registry, products, deny list ----------------------------------------

    async def on_ticket_event(self, event: Event, _record: ConsumerRecord) -> None:
        if event.type == TICKET_ISSUED:
            await self._ticket_issued(events.TicketIssued.model_validate(event.data))
        elif event.type == TICKET_REVOKED:
            revoked = events.TicketRevoked.model_validate(event.data)
            if revoked.ticket_id is not None:
                until = unix(revoked.valid_until_unix) or unix(revoked.valid_until)
                await self._deny(f"ticket:{revoked.ticket_id}", Reason.revoked_ticket, until)
        elif event.type == DEVICE_REVOKED:
            device = events.DeviceRevoked.model_validate(event.data)
            fingerprint = device.device_key_fingerprint
            if fingerprint is None and device.device_public_key is not None:
                fingerprint = device_fingerprint(decode_public_key(device.device_public_key))
            if fingerprint:
                until = unix(device.deny_until)
                await self._deny(f"device:{fingerprint.lower()}", Reason.revoked_device, until)
        elif event.type == ISSUER_KEYS_CHANGED:
            await self._issuer_keys_changed(event)
        elif event.type in (FARE_UNPAID, FARE_SETTLED):
            fare = events.FareNews.model_validate(event.data)
            if fare.ticket_id is not None:
                await self._fare_news(event.type, str(fare.ticket_id))

    async def _fare_news(self, kind: str, ticket_id: str) -> None:
        """An unpaid fare denies the ticket (unless it is denied for more); a settled one lifts
        that denial."""
        entry = f"ticket:{ticket_id}"
        if kind == FARE_UNPAID:
            current = self.memory.deny_tickets.get(ticket_id)
            if current is None or current.reason is Reason.insufficient_balance:
                await self._deny(entry, Reason.insufficient_balance, None)
        else:
            await repository.lift(self.redis, entry, Reason.insufficient_balance.value)
            self.memory.lift_entry(entry, Reason.insufficient_balance)

    async def _issuer_keys_changed(self, event: Event) -> None:
        """With ticketing reachable, the event only says "ask now": its `/v1/keys` is the
        current set, where an event may be an old one redelivered or replayed. Without it, the
        event's set applies unless one with a later time already did (its time is capped at our
        clock plus the device window, so a clock running ahead cannot freeze the keys)."""
        if self.settings.ticketing_url:
            self._keys_changed.set()
            return
        as_of = min(
            event.time.timestamp(), time.time() + self.settings.device_window.total_seconds()
        )
        records = key_records(event.data)
        if await repository.replace_issuer_keys(self.redis, TICKETING_SOURCE, records, as_of):
            self.memory.apply(await repository.load_state(self.redis), int(time.time()))

    async def _ticket_issued(self, issued: events.TicketIssued) -> None:
        try:
            kind = TicketKind(str(issued.kind))
        except ValueError:
            logger.warning("ticket %s has unknown kind %r", issued.ticket_id, issued.kind)
            return
        if issued.ticket_id is None:
            return
        ticket_id, rides = str(issued.ticket_id), issued.rides
        # Credentials carry a short product code (every byte of the QR counts).
        product = issued.credential_product or issued.product_code
        wallet = issued.wallet_account_id or issued.rider_wallet_account_id
        fields = {"kind": kind.value, "rides": str(-1 if rides is None else rides)}
        if product is not None:
            fields["product"] = product
        if wallet:
            fields["wallet"] = wallet
        valid_until = (
            unix(issued.valid_until_unix)
            or unix(issued.valid_until)
            or int(time.time()) + 400 * 86_400
        )
        await repository.save_ticket(
            self.redis, ticket_id, fields, valid_until + TICKET_LIFETIME_MARGIN_S
        )
        if isinstance(product, str):
            record = {"kind": kind.value, "rides": rides}
            await repository.save_product(self.redis, product, record)
            self.memory.learn_product(product, record)

    async def _deny(self, entry: str, reason: Reason, until: int | None) -> None:
        record = {"reason": reason.value, "until": until}
        await repository.deny(self.redis, entry, record)
        self.memory.deny_entry(entry, record)

    async def drop_expired_revocations(self) -> None:
        """A revocation ends with the ticket's validity or the device's `deny_until`; without
        this the deny list (and every gate's offline bundle) would only ever grow."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(DENY_CLEANUP_S)
            try:
                await repository.drop_expired_deny(self.redis, int(time.time()))
            except (RedisError, OSError) as exc:
                self._log_failure("deny-list clean-up", exc)

    # Trips left open -------------------------------------------------------------------------

    async def sweep_trips(self) -> None:
        interval = self.settings.trip_sweep_interval.total_seconds()
        while True:
            raise_if_cancelled()
            await asyncio.sleep(interval)
            try:
                await self.close_overdue_trips(int(time.time()))
                self._recovered("trip sweeper")
            except (RedisError, OSError) as exc:
                self._log_failure("trip sweeper", exc)

    async def close_overdue_trips(self, now: int) -> int:
        closed = 0
        for ticket_id, entry_vid in await repository.overdue_trips(self.redis, now):
            context = orjson.dumps({"ticket": ticket_id, "vid": entry_vid, "now": now})
            # The script appends the closure's event; None if another process closed it first.
            if await repository.close_trip(self.redis, ticket_id, entry_vid, context):
                closed += 1
            await repository.unindex_trip(self.redis, ticket_id, entry_vid)
        return closed
