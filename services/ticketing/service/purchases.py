"""The purchase saga: pending purchase, charge, ticket; refund when no ticket can be issued."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.ticketing import credentials, events, repository, tables
from services.ticketing.payments import (
    DuplicateTransfer,
    InsufficientFunds,
    PaymentRefused,
    Payments,
    PaymentsBusy,
)
from services.ticketing.repository import Record
from services.ticketing.schemas import (
    CategoryStatus,
    ProductRead,
    PurchaseCreate,
    PurchaseRead,
    PurchaseStatus,
    RiderCategory,
    TicketStatus,
)
from services.ticketing.service import LIST_LIMIT, products, riders, tickets, wallet
from services.ticketing.settings import TicketingSettings
from shared import ticketcodec
from shared.db import Database
from shared.errors import Conflict, Forbidden, NotFound, ProblemError, Unprocessable
from shared.events import TICKETS_TOPIC
from shared.fares.feed import Feed
from shared.fares.versions import NetworkSync
from shared.idempotency import IdempotencyKeyReused, IdempotentRequest
from shared.ids import new_id, utcnow
from shared.outbox import add_event
from shared.payments_client import PaymentsUnavailable

logger = logging.getLogger("citypass.ticketing")

OPEN_ENDED_DAYS = 365  # a product without `validity_days` is valid for a year
RECONCILE_BATCH = 50
# Credentials must fit the QR: checked at sale time with the longest kid we will ever use.
_LONGEST_KID = credentials.kid_for(9999)
_ANY_DEVICE_KEY = bytes(32)


def _ticket_lines(product: ProductRead, line: str | None) -> list[str]:
    return [line] if line is not None else list(product.lines)


def _check_sellable(rider: Record, product: ProductRead, body: PurchaseCreate, feed: Feed) -> None:
    """Refuse what the rider may not buy, before anything is recorded or charged."""
    if RiderCategory(rider.category) not in product.categories:
        pending = (
            f" (your {rider.requested_category} request awaits an operator)"
            if rider.category_status == CategoryStatus.pending.value
            else ""
        )
        raise Forbidden(
            f"{product.code} is for {', '.join(c.value for c in product.categories)} riders; "
            f"you are {rider.category}{pending}.",
            code="category_not_eligible",
        )
    if product.line_choice:
        choices = products.line_choices(feed, product.mode)
        if body.line is None or body.line not in choices:
            raise Unprocessable(
                f"{product.code} is valid on one line or route: give `line`, one of "
                f"{', '.join(sorted(choices))}.",
                code="invalid_line",
            )
    elif body.line is not None:
        raise Unprocessable(f"{product.code} takes no `line`.", code="invalid_line")
    try:
        ticketcodec.encode_credential(
            credentials.build(
                kid=_LONGEST_KID,
                ticket_id=uuid.UUID(int=0),
                credential_code=product.credential_code,
                category=RiderCategory(rider.category),
                valid_from=0,
                valid_until=0,
                lines=credentials.scope(product.mode, _ticket_lines(product, body.line)),
                device_key=_ANY_DEVICE_KEY,
            )
        )
    except ticketcodec.TicketCodecError as error:
        raise Unprocessable(
            f"{product.code} cannot be carried in a QR credential ({error.code}).",
            code="product_not_issuable",
        ) from None


def _sellable_product(network: NetworkSync, rider: Record, body: PurchaseCreate) -> ProductRead:
    """The product as the network version in force sells it now."""
    now, versions = utcnow(), network.versions
    product = products.find_product(versions, body.product_code, now)
    if product is None:
        raise Unprocessable(f"No product {body.product_code}.", code="unknown_product")
    _check_sellable(rider, product, body, versions.feed_at(now))
    return product


def _needs_wallet(product: ProductRead) -> bool:
    return product.price_vnd > 0 or product.distance_priced


async def purchase_read(session: AsyncSession, purchase: Record) -> PurchaseRead:
    ticket = await repository.get_ticket_of_purchase(session, purchase.id)
    return PurchaseRead(
        id=purchase.id,
        status=PurchaseStatus(purchase.status),
        product_code=purchase.product_code,
        line=purchase.line,
        price_vnd=purchase.price_vnd,
        charge_id=purchase.charge_id,
        refund_id=purchase.refund_id,
        failure_code=purchase.failure_code,
        ticket=None if ticket is None else tickets.ticket_read(ticket),
        created_at=purchase.created_at,
        completed_at=purchase.completed_at,
    )


async def list_purchases(session: AsyncSession, rider_id: uuid.UUID) -> list[PurchaseRead]:
    return [
        await purchase_read(session, p)
        for p in await repository.list_purchases(session, rider_id, LIST_LIMIT)
    ]


async def get_purchase(
    session: AsyncSession, rider_id: uuid.UUID, purchase_id: uuid.UUID
) -> PurchaseRead:
    purchase = await repository.get_purchase(session, purchase_id, rider_id=rider_id)
    if purchase is None:
        raise NotFound(f"You have no purchase {purchase_id}.", code="purchase_not_found")
    return await purchase_read(session, purchase)


async def _wallet_missing(
    session: AsyncSession, network: NetworkSync, rider_id: uuid.UUID, body: PurchaseCreate
) -> bool:
    """Checks the sale first (bad input records nothing and opens nothing)."""
    rider = await riders.rider_row(session, rider_id)
    product = _sellable_product(network, rider, body)
    return _needs_wallet(product) and rider.wallet_account_id is None


async def _record_purchase(
    session: AsyncSession,
    settings: TicketingSettings,
    network: NetworkSync,
    rider_id: uuid.UUID,
    body: PurchaseCreate,
    request: IdempotentRequest,
) -> Record | None:
    rider = await riders.rider_row(session, rider_id, lock=True)
    product = _sellable_product(network, rider, body)
    if _needs_wallet(product) and rider.wallet_account_id is None:
        raise Conflict("The rider's wallet is not open yet; retry.", code="wallet_not_open")
    now = utcnow()
    inserted = await repository.insert_purchase(
        session,
        id=new_id(),
        rider_id=rider_id,
        idempotency_key=request.key,
        fingerprint=request.fingerprint,
        product_code=product.code,
        line=body.line,
        price_vnd=product.price_vnd,
        rider_category=rider.category,
        wallet_account_id=rider.wallet_account_id,
        status=PurchaseStatus.pending.value,
        next_attempt_at=now + settings.purchase_retry_after,
        created_at=now,
    )
    return inserted or await repository.get_purchase_by_key(session, rider_id, request.key)


async def place_purchase(
    db: Database,
    payments: Payments,
    settings: TicketingSettings,
    network: NetworkSync,
    rider_id: uuid.UUID,
    body: PurchaseCreate,
    request: IdempotentRequest,
) -> tuple[PurchaseRead, bool]:
    """Record the purchase as pending, charge the wallet, issue the ticket (owns transactions).

    The purchase row is keyed by (rider, Idempotency-Key) and commits before any money moves;
    the charge's transfer id *is* the purchase id, so payments can never post it twice and
    the worker can always find out what happened. True when it was already complete (a replay).
    """
    async with db.transaction() as session:
        existing = await repository.get_purchase_by_key(session, rider_id, request.key)
        open_wallet = existing is None and await _wallet_missing(session, network, rider_id, body)
    if open_wallet:
        await wallet.ensure_wallet(db, payments, rider_id)
    if existing is None:
        async with db.transaction() as session:
            existing = await _record_purchase(session, settings, network, rider_id, body, request)
    assert existing is not None
    if existing.fingerprint != request.fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different purchase."
        )
    replay = existing.status == PurchaseStatus.completed.value
    outcome = await advance_purchase(db, payments, settings, network, existing, retry_failed=True)
    return outcome, replay


async def advance_purchase(
    db: Database,
    payments: Payments,
    settings: TicketingSettings,
    network: NetworkSync,
    purchase: Record,
    *,
    retry_failed: bool = False,
) -> PurchaseRead:
    """Take a purchase as far as it goes now (owns transactions); safe to repeat at any point.

    pending → charge (idempotent, transfer id = purchase id) → ticket → completed
    pending, payment refused → failed (a retry with the same key tries again)
    cancelling → refund whatever was charged → cancelled
    """
    status = PurchaseStatus(purchase.status)
    if status is PurchaseStatus.failed and retry_failed:
        async with db.transaction() as session:
            purchase = await _reopen(session, purchase.id, settings)
        status = PurchaseStatus(purchase.status)
    if status is PurchaseStatus.cancelling:
        return await _compensate(db, payments, purchase)
    if status is not PurchaseStatus.pending:
        if status is PurchaseStatus.cancelled:
            raise Conflict(
                "This purchase was cancelled (and refunded if charged); buy again with a new "
                "Idempotency-Key.",
                code="purchase_cancelled",
                purchase_id=str(purchase.id),
            )
        async with db.transaction() as session:
            return await purchase_read(session, purchase)
    charge_id: uuid.UUID | None = purchase.charge_id
    if purchase.price_vnd > 0 and charge_id is None:
        charge_id = await _charge(db, payments, purchase)
    async with db.transaction() as session:
        settled = await _settle(session, network, purchase.id, charge_id)
        if settled.status != PurchaseStatus.cancelling.value:
            return await purchase_read(session, settled)
    return await _compensate(db, payments, settled)


async def _reopen(
    session: AsyncSession, purchase_id: uuid.UUID, settings: TicketingSettings
) -> Record:
    purchase = await repository.get_purchase(session, purchase_id, lock=True)
    assert purchase is not None
    if purchase.status != PurchaseStatus.failed.value:
        return purchase
    return await repository.update_purchase(
        session,
        purchase_id,
        status=PurchaseStatus.pending.value,
        failure_code=None,
        next_attempt_at=utcnow() + settings.purchase_retry_after,
    )


async def _charge(db: Database, payments: Payments, purchase: Record) -> uuid.UUID:
    try:
        charge = await payments.charge(
            account_id=purchase.wallet_account_id,
            amount=purchase.price_vnd,
            transfer_id=purchase.id,
            key=f"ticketing:purchase:{purchase.id}",
        )
    except DuplicateTransfer:  # posted by an earlier attempt whose answer was lost
        return uuid.UUID(str(purchase.id))
    except (InsufficientFunds, PaymentRefused) as refusal:
        async with db.transaction() as session:
            locked = await repository.get_purchase(session, purchase.id, lock=True)
            if locked is not None and locked.status == PurchaseStatus.pending.value:
                await repository.update_purchase(
                    session,
                    purchase.id,
                    status=PurchaseStatus.failed.value,
                    failure_code=refusal.code,
                )
        refusal.extra["purchase_id"] = str(purchase.id)
        raise
    except PaymentsUnavailable as unavailable:
        raise PaymentsUnavailable(
            f"{unavailable.detail} Purchase {purchase.id} stays pending: it is completed (one "
            "charge, one ticket) or cancelled (nothing charged) automatically. Retry with the "
            f"same Idempotency-Key, or watch GET /v1/purchases/{purchase.id}; a new key would "
            "buy a second ticket.",
            purchase_id=str(purchase.id),
        ) from None
    except PaymentsBusy as busy:
        busy.extra["purchase_id"] = str(purchase.id)
        raise
    return charge.id


async def _settle(
    session: AsyncSession, network: NetworkSync, purchase_id: uuid.UUID, charge_id: uuid.UUID | None
) -> Record:
    """Issue the ticket of a paid (or free) purchase, once; or mark it for a refund. The price
    was fixed at the sale; the ticket's terms are those of the version in force now."""
    purchase = await repository.get_purchase(session, purchase_id, lock=True)
    assert purchase is not None
    if purchase.status != PurchaseStatus.pending.value:
        return purchase
    product = products.find_product(network.versions, purchase.product_code, utcnow())
    if product is None:  # withdrawn between the sale and the payment: give the money back
        return await repository.update_purchase(
            session,
            purchase_id,
            status=PurchaseStatus.cancelling.value,
            charge_id=charge_id,
            failure_code="product_withdrawn",
            next_attempt_at=utcnow(),
        )
    now = utcnow().replace(microsecond=0)
    lines = _ticket_lines(product, purchase.line)
    ticket = await repository.insert_ticket(
        session,
        id=new_id(),
        purchase_id=purchase_id,
        rider_id=purchase.rider_id,
        product_code=product.code,
        credential_code=product.credential_code,
        kind=product.kind.value,
        mode=product.mode.value,
        rider_category=purchase.rider_category,
        rides=product.rides,
        lines=lines,
        valid_from=now,
        valid_until=now + timedelta(days=product.validity_days or OPEN_ENDED_DAYS),
        status=TicketStatus.active.value,
        created_at=now,
    )
    device = await repository.active_device(session, purchase.rider_id)
    await add_event(
        session,
        tables.outbox,
        TICKETS_TOPIC,
        str(ticket.id),
        events.ticket_issued(
            ticket,
            credential_code=product.credential_code,
            scope=credentials.scope(product.mode, lines),
            price_vnd=purchase.price_vnd,
            distance_priced=product.distance_priced,
            device_key_fingerprint=None if device is None else device.fingerprint,
            wallet_account_id=purchase.wallet_account_id,
        ),
    )
    return await repository.update_purchase(
        session,
        purchase_id,
        status=PurchaseStatus.completed.value,
        charge_id=charge_id,
        completed_at=now,
    )


async def _compensate(db: Database, payments: Payments, purchase: Record) -> PurchaseRead:
    """Refund whatever was charged for a purchase that gets no ticket, then cancel it."""
    refund_id: uuid.UUID | None = None
    if purchase.price_vnd > 0:
        refund = await payments.refund(
            charge_id=purchase.id,
            amount=purchase.price_vnd,
            key=f"ticketing:purchase-refund:{purchase.id}",
        )
        refund_id = None if refund is None else refund.id
    async with db.transaction() as session:
        locked = await repository.get_purchase(session, purchase.id, lock=True)
        assert locked is not None
        if locked.status == PurchaseStatus.cancelling.value:
            locked = await repository.update_purchase(
                session,
                purchase.id,
                status=PurchaseStatus.cancelled.value,
                refund_id=refund_id,
                charge_id=None if refund_id is None else purchase.id,
                completed_at=utcnow(),
            )
        return await purchase_read(session, locked)


async def reconcile_purchases(
    db: Database, payments: Payments, settings: TicketingSettings, network: NetworkSync
) -> int:
    """One pass of the purchase worker: every unresolved purchase that is due moves on.

    Forward when it can (charge → ticket): the charge is idempotent, so a charge that went
    through while its answer was lost is found, not repeated. Backward (refund) when no
    ticket can be issued, or when payments stayed unreachable for `purchase_abandon_after`.
    """
    now = utcnow()
    async with db.transaction() as session:
        claimed = await repository.claim_pending_purchases(
            session,
            now,
            backoff=settings.purchase_retry_after,
            max_backoff=settings.purchase_retry_max_backoff,
            limit=RECONCILE_BATCH,
        )
    for purchase in claimed:
        try:
            if (
                purchase.status == PurchaseStatus.pending.value
                and purchase.charge_id is None
                and purchase.created_at < now - settings.purchase_abandon_after
            ):
                purchase = await _abandon(db, purchase.id)
            outcome = await advance_purchase(db, payments, settings, network, purchase)
            logger.info(
                "purchase %s resolved: %s",
                purchase.id,
                outcome.status.value,
                extra={"purchase_id": str(purchase.id)},
            )
        except ProblemError as problem:
            logger.info("purchase %s not resolved yet: %s", purchase.id, problem.code)
    return len(claimed)


async def _abandon(db: Database, purchase_id: uuid.UUID) -> Record:
    async with db.transaction() as session:
        purchase = await repository.get_purchase(session, purchase_id, lock=True)
        assert purchase is not None
        if purchase.status != PurchaseStatus.pending.value:
            return purchase
        return await repository.update_purchase(
            session,
            purchase_id,
            status=PurchaseStatus.cancelling.value,
            failure_code="payment_unconfirmed",
        )
