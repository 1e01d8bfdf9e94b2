"""The fare worker (consumer group `validation-fares`, and `validation-topups`): prices each
accepted stored-value leg from the network's feed (fare_accounts.py: transfers, daily and
weekly caps, late and corrected taps) and posts what it changes to payments.

- `on_validation_event`: a metro exit, a bus tap or a trip closed by the sweeper is a leg; its
  account is saved with its postings and `fare.charged`/`fare.refunded` event, then the
  postings go to payments (Idempotency-Key and transfer id derived from the event). An entry
  indexes the open trip for the sweeper.
- A wallet that cannot pay (402) records the charge as unpaid and emits `fare.unpaid`; every
  validation process then denies the ticket until a top-up (`on_ledger_event`) or the periodic
  re-check (`recheck_unpaid`) settles it (`fare.settled`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.validation import events, repository
from services.validation.events import unix
from services.validation.fare_accounts import FareAccounts, Posting, leg_of
from services.validation.outbox import Outbox
from services.validation.rules import TicketKind
from services.validation.settings import ValidationSettings
from shared.events import (
    TICKETS_TOPIC,
    TRANSFER_POSTED,
    TRIP_AUTO_CLOSED,
    VALIDATION_ACCEPTED,
    Event,
)
from shared.fares.versions import NetworkVersions
from shared.health import raise_if_cancelled
from shared.payments_client import PaymentsClient, PaymentsRefused, PaymentsUnavailable
from shared.redis import PipelinedRedis

logger = logging.getLogger("citypass.validation.fare_worker")

UNPAID_RECHECK_S = 600.0
FARE_RETRY_MAX_S = 30.0


class FareError(RuntimeError):
    """A fare that cannot be charged as it stands; the consumer retries, then dead-letters."""


Charged = dict[str, Any] | PaymentsRefused  # the answer, or payments' refusal


def _paid(charged: Charged) -> bool:
    """Posted now, or earlier (the same transfer id is already in the ledger)."""
    return not isinstance(charged, PaymentsRefused) or charged.code == "duplicate_transfer"


class FareWorker:
    def __init__(
        self,
        settings: ValidationSettings,
        redis: Redis,
        outbox: Outbox,
        versions: Callable[[], NetworkVersions],
    ) -> None:
        self.redis = redis
        self.outbox = outbox
        self.max_trip_s = int(settings.max_trip.total_seconds())
        self.hot = PipelinedRedis(settings.redis_url)
        self.accounts = FareAccounts(redis, versions, self.hot)
        self.versions = versions
        self.payments = PaymentsClient(
            settings.payments_url,
            settings.payments_token.get_secret_value(),
            timeout_s=settings.payments_timeout_s,
            caller="validation",
        )
        self._failing = False

    async def close(self) -> None:
        await self.payments.close()
        await self.hot.close()

    # transit.validations: legs and open trips ------------------------------------------------

    async def on_validation_event(self, event: Event, _record: ConsumerRecord) -> None:
        if event.type not in (VALIDATION_ACCEPTED, TRIP_AUTO_CLOSED):
            return
        try:
            decided = events.Decided.model_validate(event.data)
        except ValidationError as unreadable:
            logger.warning("validation event %s unreadable: %s", event.id, unreadable)
            return
        ticket_id, vid = decided.ticket_id, decided.validation_id
        if decided.kind != TicketKind.stored_value:
            return
        if event.type == VALIDATION_ACCEPTED:
            # Only a stored-value trip costs something when left open; the others close at
            # the rider's next tap (or expire with the ticket) without the sweeper.
            if decided.action == "entry" and decided.station:
                entered = unix(decided.decided_at) or int(time.time())
                await repository.index_open_trip(
                    self.redis, ticket_id, vid, entered + self.max_trip_s
                )
            if decided.action == "exit" and decided.entry is not None:
                await repository.unindex_trip(self.redis, ticket_id, decided.entry.validation_id)
        else:
            await repository.unindex_trip(self.redis, ticket_id, vid)
        await self.price_leg(event, decided)

    async def price_leg(self, event: Event, decided: events.Decided) -> None:
        """Apply the event's leg to the ticket's fare account, then send what is pending."""
        found = leg_of(event.type, decided, self.versions().current().feed)
        if found is None:
            return
        leg, open_entry = found
        ticket_id = decided.ticket_id
        wallet = decided.wallet_account_id or await repository.ticket_wallet(self.redis, ticket_id)
        if not wallet:
            raise FareError(f"no wallet is known for ticket {ticket_id} (ticket.issued missing?)")
        await self.accounts.apply(
            ticket_id, wallet, decided.rider_category, leg, event.id, open_entry
        )
        await self.send_pending(ticket_id)

    async def send_pending(self, ticket_id: str) -> None:
        for posting in await self.accounts.pending(ticket_id):
            await self.post(ticket_id, posting)

    async def post(self, ticket_id: str, posting: Posting) -> None:
        answer = await self._post(posting.path, posting.body, posting.key)
        if _paid(answer):
            await self._save_balance(ticket_id, answer)
        elif posting.is_charge and isinstance(answer, PaymentsRefused) and answer.status == 402:
            await self._unpaid(ticket_id, posting, answer)
        elif isinstance(answer, PaymentsRefused) and not posting.is_charge:
            # The charge it refunds is unpaid (unknown to payments) or already refunded.
            logger.warning("refund %s for %s refused: %s", posting.key, ticket_id, answer)
        else:
            raise FareError(f"payments refused fare {posting.key}: {answer}")
        await self.accounts.acknowledged(ticket_id, posting)

    async def _unpaid(self, ticket_id: str, posting: Posting, refused: PaymentsRefused) -> None:
        account = str(posting.body["account_id"])
        unpaid = orjson.dumps({"ticket_id": ticket_id, "body": orjson.dumps(posting.body).decode()})
        await repository.record_unpaid(self.redis, account, posting.key, unpaid)
        await self.outbox.emit(
            TICKETS_TOPIC,
            ticket_id,
            events.fare_unpaid(
                ticket_id=ticket_id,
                wallet_account_id=account,
                validation_id=posting.key,
                amount=int(posting.body["amount"]),
                shortfall=refused.body.get("shortfall"),
            ),
        )

    async def _post(self, path: str, body: dict[str, Any], key: str) -> Charged:
        """POST until payments gives a definite answer (transient errors retried)."""
        delay = 0.2
        while True:
            raise_if_cancelled()
            try:
                answer = await self.payments.call("POST", path, body, key=key)
            except PaymentsRefused as refused:
                self._recovered()
                return refused
            except PaymentsUnavailable as unavailable:
                if not self._failing:
                    self._failing = True
                    logger.warning("payments failing: %s", unavailable)
            else:
                self._recovered()
                return answer
            await asyncio.sleep(delay)
            delay = min(FARE_RETRY_MAX_S, delay * 2)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("payments recovered")

    async def _save_balance(self, ticket_id: str, charged: Charged) -> None:
        answer = charged.body if isinstance(charged, PaymentsRefused) else charged
        if isinstance(answer.get("balance"), int):
            await repository.save_balance(self.redis, ticket_id, answer["balance"])

    # payments.ledger: top-ups settle unpaid fares ---------------------------------------------

    async def on_ledger_event(self, event: Event, _record: ConsumerRecord) -> None:
        if event.type != TRANSFER_POSTED:
            return
        posted = events.TransferPosted.model_validate(event.data)
        if posted.kind == "topup" and posted.wallet_account_id:
            await self.settle_wallet(posted.wallet_account_id)

    async def settle_wallet(self, wallet: str) -> None:
        unpaid = await repository.unpaid_fares(self.redis, wallet)
        settled: dict[str, list[str]] = defaultdict(list)
        still_unpaid: set[str] = set()
        for key, raw in sorted(unpaid.items()):
            record = orjson.loads(raw)
            ticket_id = record["ticket_id"]
            charged = await self._post("/v1/charges", orjson.loads(record["body"]), key)
            if _paid(charged):
                await repository.settle_unpaid(self.redis, wallet, key)
                await self._save_balance(ticket_id, charged)
                settled[ticket_id].append(key)
            else:
                still_unpaid.add(ticket_id)
        for ticket_id, keys in settled.items():
            if ticket_id not in still_unpaid:
                await self.outbox.emit(
                    TICKETS_TOPIC,
                    ticket_id,
                    events.fare_settled(
                        ticket_id=ticket_id, wallet_account_id=wallet, validation_ids=keys
                    ),
                )

    async def recheck_unpaid(self) -> None:
        """Top-ups can arrive by paths we do not hear about; try unpaid fares now and then."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(UNPAID_RECHECK_S)
            try:
                for wallet in await repository.wallets_with_unpaid_fares(self.redis):
                    await self.settle_wallet(wallet)
            except (RedisError, OSError) as exc:
                logger.warning("unpaid fare re-check failing: %s", exc)
