"""Ticketing rules. No SQL here (see repository.py), no HTTP (see endpoints.py; payments is
reached through `payments.PaymentsClient`).

Most functions run inside the caller's transaction and never commit. The purchase saga and the
wallet helpers cannot: a payment is an HTTP call that must sit *between* two commits (the
pending purchase before it, the ticket after it). Those take the `Database` and own their
transactions, exactly as an endpoint does; their names say so (`place_purchase`,
`advance_purchase`, `reconcile_purchases`, `ensure_wallet`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from datetime import UTC, datetime, timedelta

import uuid_utils
from sqlalchemy.ext.asyncio import AsyncSession

from services.ticketing import credentials, events, fares, repository
from services.ticketing.auth import (
    hash_password,
    issue_access_token,
    new_refresh_token,
    refresh_token_hash,
    verify_password,
)
from services.ticketing.credentials import KeyWrap
from services.ticketing.payments import (
    DuplicateTransfer,
    InsufficientFunds,
    PaymentRefused,
    PaymentsBusy,
    PaymentsClient,
    PaymentsUnavailable,
)
from services.ticketing.repository import Record
from services.ticketing.schemas import (
    CategoryDecision,
    CategoryStatus,
    CredentialRead,
    DeviceCreate,
    DeviceRead,
    DeviceStatus,
    IssuerKeyRead,
    KeySet,
    KeyStatus,
    LoginRequest,
    Mode,
    ProductKind,
    ProductRead,
    PurchaseCreate,
    PurchaseRead,
    PurchaseStatus,
    RiderCategory,
    RiderCreate,
    RiderRead,
    SessionRead,
    TicketRead,
    TicketStatus,
    TopupRead,
    WalletRead,
)
from services.ticketing.settings import TicketingSettings
from shared import ticketcodec
from shared.db import Database
from shared.errors import Conflict, Forbidden, NotFound, ProblemError, Unauthorized, Unprocessable
from shared.idempotency import IdempotencyKeyReused, IdempotentRequest
from shared.network import BUS_ROUTES, LINES
from shared.outbox import add_event

logger = logging.getLogger("citypass.ticketing")

OPEN_ENDED_DAYS = 365  # a product without `validity_days` is valid for a year
LIST_LIMIT = 200
RECONCILE_BATCH = 50
# Credentials must fit the QR: checked at sale time with the longest kid we will ever use.
_LONGEST_KID = credentials.kid_for(9999)
_ANY_DEVICE_KEY = bytes(32)


class DeviceSwitchLimit(ProblemError):
    status, code, title = 429, "device_switch_limit", "Too many device switches"


class TooManyLoginFailures(ProblemError):
    status, code, title = 429, "too_many_login_failures", "Too many wrong passwords"


class RefreshTokenReused(Unauthorized):
    """A used refresh token came back: the endpoint revokes `family_id` in a transaction of
    its own, since raising rolls the current one back."""

    code = "refresh_token_reused"

    def __init__(self, family_id: uuid.UUID) -> None:
        super().__init__("This refresh token was already used: log in again.")
        self.family_id = family_id


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.UUID(str(uuid_utils.uuid7()))


# Products ---------------------------------------------------------------------------------------


async def seed_products(session: AsyncSession) -> int:
    catalogue = fares.catalogue()
    await repository.upsert_products(session, [p.model_dump(mode="json") for p in catalogue])
    return len(catalogue)


async def list_products(session: AsyncSession) -> list[ProductRead]:
    return [ProductRead.model_validate(dict(r)) for r in await repository.list_products(session)]


async def get_product(session: AsyncSession, code: str) -> ProductRead:
    row = await repository.get_product(session, code)
    if row is None:
        raise NotFound(f"No product {code}.", code="product_not_found")
    return ProductRead.model_validate(dict(row))


# Riders and sessions ----------------------------------------------------------------------------


def rider_read(row: Record) -> RiderRead:
    return RiderRead(
        id=row.id,
        phone=row.phone,
        category=RiderCategory(row.category),
        requested_category=(
            None if row.requested_category is None else RiderCategory(row.requested_category)
        ),
        category_status=CategoryStatus(row.category_status),
        wallet_account_id=row.wallet_account_id,
        created_at=row.created_at,
    )


async def _rider(session: AsyncSession, rider_id: uuid.UUID, *, lock: bool = False) -> Record:
    row = await repository.get_rider(session, rider_id, lock=lock)
    if row is None:  # a valid token for a rider that no longer exists
        raise Unauthorized("This rider account does not exist.", code="unknown_rider")
    return row


async def _new_session(
    session: AsyncSession,
    rider: Record,
    settings: TicketingSettings,
    now: datetime,
    family_id: uuid.UUID | None = None,
) -> SessionRead:
    token, token_hash = new_refresh_token()
    await repository.insert_refresh_token(
        session,
        id=new_id(),
        rider_id=rider.id,
        family_id=family_id or new_id(),
        token_hash=token_hash,
        created_at=now,
        expires_at=now + settings.refresh_token_ttl,
    )
    return SessionRead(
        access_token=issue_access_token(rider.id, settings, now),
        expires_in=int(settings.access_token_ttl.total_seconds()),
        refresh_token=token,
        refresh_expires_in=int(settings.refresh_token_ttl.total_seconds()),
        rider=rider_read(rider),
    )


async def sign_up(
    session: AsyncSession, body: RiderCreate, password_hash: str, settings: TicketingSettings
) -> SessionRead:
    """A new rider (regular until an operator approves a requested concession)."""
    now = utcnow()
    concession = body.category is not RiderCategory.regular
    rider = await repository.insert_rider(
        session,
        id=new_id(),
        phone=body.phone,
        password_hash=password_hash,
        category=RiderCategory.regular.value,
        requested_category=body.category.value if concession else None,
        category_status=(CategoryStatus.pending if concession else CategoryStatus.none).value,
        created_at=now,
    )
    if rider is None:
        raise Conflict("A rider with this phone number exists: log in instead.", code="phone_taken")
    return await _new_session(session, rider, settings, now)


async def prepare_password(password: str, settings: TicketingSettings) -> str:
    """Argon2id, off the event loop: before the transaction, which it would hold up."""
    return await hash_password(password, settings)


async def log_in(
    session: AsyncSession, body: LoginRequest, settings: TicketingSettings
) -> SessionRead | None:
    """A new session, or None for a wrong phone number or password: that failure is recorded
    in `session`, so the caller commits it and then refuses (raising would roll it back)."""
    now = utcnow()
    failures = await repository.login_failures_of(session, body.phone)
    if failures is not None and failures.failures >= settings.login_failure_limit:
        until = failures.first_failed_at + settings.login_failure_window
        if until > now:
            raise TooManyLoginFailures(
                "Too many wrong passwords for this phone number; try again later.",
                retry_after_s=math.ceil((until - now).total_seconds()),
            )
    rider = await repository.get_rider_by_phone(session, body.phone)
    password_hash = None if rider is None else rider.password_hash
    if not await verify_password(password_hash, body.password, settings):
        await repository.record_login_failure(
            session, body.phone, now, settings.login_failure_window
        )
        return None
    assert rider is not None
    if failures is not None:
        await repository.clear_login_failures(session, body.phone)
    return await _new_session(session, rider, settings, now)


async def refresh_session(
    session: AsyncSession, token: str, settings: TicketingSettings
) -> SessionRead:
    """Trade a refresh token for a new pair. A token used twice was stolen: end its family."""
    now = utcnow()
    row = await repository.get_refresh_token(session, refresh_token_hash(token))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("This refresh token is not valid: log in.", code="invalid_refresh_token")
    if row.used_at is not None:
        logger.warning("refresh token reused", extra={"rider_id": str(row.rider_id)})
        raise RefreshTokenReused(row.family_id)
    await repository.mark_refresh_token_used(session, row.id, now)
    rider = await _rider(session, row.rider_id)
    return await _new_session(session, rider, settings, now, family_id=row.family_id)


async def log_out(session: AsyncSession, token: str) -> None:
    """Revoke the refresh token and every token rotated from the same login."""
    row = await repository.get_refresh_token(session, refresh_token_hash(token))
    if row is not None:
        await revoke_token_family(session, row.family_id)


async def revoke_token_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await repository.revoke_refresh_family(session, family_id, utcnow())


async def get_rider(session: AsyncSession, rider_id: uuid.UUID) -> RiderRead:
    return rider_read(await _rider(session, rider_id))


async def request_category(
    session: AsyncSession, rider_id: uuid.UUID, category: RiderCategory
) -> RiderRead:
    """Ask for a concession category; it applies once an operator approves it."""
    rider = await _rider(session, rider_id, lock=True)
    if category is RiderCategory.regular:  # giving up a concession needs nobody's approval
        values: dict[str, object] = {
            "category": category.value,
            "requested_category": None,
            "category_status": CategoryStatus.none.value,
        }
    elif category.value == rider.category:  # already in force: withdraw any other request
        values = {"requested_category": None, "category_status": CategoryStatus.approved.value}
    else:
        values = {
            "requested_category": category.value,
            "category_status": CategoryStatus.pending.value,
            "category_note": None,
        }
    return rider_read(await repository.update_rider(session, rider_id, **values))


async def category_requests(session: AsyncSession) -> list[RiderRead]:
    return [rider_read(r) for r in await repository.pending_category_requests(session, LIST_LIMIT)]


async def decide_category(
    session: AsyncSession, rider_id: uuid.UUID, decision: CategoryDecision
) -> RiderRead:
    rider = await repository.get_rider(session, rider_id, lock=True)
    if rider is None:
        raise NotFound(f"No rider {rider_id}.", code="rider_not_found")
    if rider.category_status != CategoryStatus.pending.value or rider.requested_category is None:
        raise Conflict("This rider has no category request pending.", code="no_pending_request")
    if decision.approve:
        values: dict[str, object] = {
            "category": rider.requested_category,
            "requested_category": None,
            "category_status": CategoryStatus.approved.value,
        }
    else:
        values = {"category_status": CategoryStatus.rejected.value}
    return rider_read(
        await repository.update_rider(session, rider_id, category_note=decision.note, **values)
    )


# Devices ----------------------------------------------------------------------------------------


def device_read(row: Record) -> DeviceRead:
    return DeviceRead(
        id=row.id,
        public_key=credentials.b64url(row.public_key),
        fingerprint=row.fingerprint,
        label=row.label,
        status=DeviceStatus(row.status),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )


async def _revoke_device(
    session: AsyncSession,
    device: Record,
    now: datetime,
    reason: str,
    replaced_by: str | None = None,
) -> Record:
    revoked = await repository.revoke_device(session, device.id, now, reason)
    await add_event(
        session,
        repository.outbox,
        events.TOPIC,
        str(device.rider_id),
        events.device_revoked(
            revoked,
            ticket_ids=await repository.live_ticket_ids(session, device.rider_id, now),
            replaced_by=replaced_by,
            deny_until=await repository.last_credential_expiry(session, device.id),
        ),
    )
    return revoked


async def register_device(
    session: AsyncSession, rider_id: uuid.UUID, body: DeviceCreate, settings: TicketingSettings
) -> tuple[DeviceRead, bool]:
    """The rider's one active device; True when it is new (the previous one is revoked)."""
    try:
        public_key = credentials.device_public_key(body.public_key)
    except ValueError as error:
        raise Unprocessable(str(error), code="invalid_public_key") from None
    now = utcnow()
    await _rider(session, rider_id, lock=True)  # one registration per rider at a time
    current = await repository.active_device(session, rider_id)
    if current is not None and current.public_key == public_key:
        return device_read(current), False
    fingerprint = credentials.fingerprint(public_key)
    if await repository.device_key_known(session, fingerprint):
        raise Conflict(
            "This key was registered before; a new device needs a newly generated key.",
            code="device_key_reused",
        )
    is_switch = await repository.has_devices(session, rider_id)
    if is_switch:
        since = now - settings.device_switch_window
        if (
            await repository.switches_since(session, rider_id, since)
            >= settings.device_switch_limit
        ):
            oldest = await repository.oldest_switch_since(session, rider_id, since)
            retry_at = (oldest or now) + settings.device_switch_window
            raise DeviceSwitchLimit(
                f"At most {settings.device_switch_limit} device switches per "
                f"{settings.device_switch_window.days} days; the next is possible at "
                f"{retry_at.isoformat()}.",
                retry_at=retry_at.isoformat(),
            )
    if current is not None:
        await _revoke_device(session, current, now, "replaced by a new device", fingerprint)
    device = await repository.insert_device(
        session,
        id=new_id(),
        rider_id=rider_id,
        public_key=public_key,
        fingerprint=fingerprint,
        label=body.label,
        status=DeviceStatus.active.value,
        is_switch=is_switch,
        created_at=now,
    )
    await add_event(
        session,
        repository.outbox,
        events.TOPIC,
        str(rider_id),
        events.device_registered(
            device, ticket_ids=await repository.live_ticket_ids(session, rider_id, now)
        ),
    )
    return device_read(device), True


async def list_devices(session: AsyncSession, rider_id: uuid.UUID) -> list[DeviceRead]:
    return [device_read(d) for d in await repository.list_devices(session, rider_id)]


async def _own_device(
    session: AsyncSession, rider_id: uuid.UUID, device_id: uuid.UUID, *, lock: bool = False
) -> Record:
    device = await repository.get_device(session, rider_id, device_id, lock=lock)
    if device is None:
        raise NotFound(f"You have no device {device_id}.", code="device_not_found")
    return device


async def get_device(
    session: AsyncSession, rider_id: uuid.UUID, device_id: uuid.UUID
) -> DeviceRead:
    return device_read(await _own_device(session, rider_id, device_id))


async def revoke_device(
    session: AsyncSession, rider_id: uuid.UUID, device_id: uuid.UUID
) -> DeviceRead:
    """A lost or sold phone: its credentials are denied from now on."""
    await _rider(session, rider_id, lock=True)
    device = await _own_device(session, rider_id, device_id, lock=True)
    if device.status == DeviceStatus.revoked.value:
        return device_read(device)
    return device_read(await _revoke_device(session, device, utcnow(), "revoked by the rider"))


# Wallet -----------------------------------------------------------------------------------------


async def ensure_wallet(db: Database, payments: PaymentsClient, rider_id: uuid.UUID) -> uuid.UUID:
    """The rider's payments wallet, opened on first need (owns its transactions)."""
    async with db.transaction() as session:
        rider = await _rider(session, rider_id)
    if rider.wallet_account_id is not None:
        wallet_id: uuid.UUID = rider.wallet_account_id
        return wallet_id
    account = await payments.open_wallet(rider_id)  # payments returns the same one if repeated
    async with db.transaction() as session:
        await repository.update_rider(session, rider_id, wallet_account_id=account.id)
    return account.id


async def wallet(db: Database, payments: PaymentsClient, rider_id: uuid.UUID) -> WalletRead:
    account = await payments.account(await ensure_wallet(db, payments, rider_id))
    return WalletRead(account_id=account.id, balance=account.balance)


def _topup_read(topup: object) -> TopupRead:
    return TopupRead.model_validate(topup, from_attributes=True)


async def create_topup(
    db: Database, payments: PaymentsClient, rider_id: uuid.UUID, amount: int, key: str
) -> TopupRead:
    wallet_id = await ensure_wallet(db, payments, rider_id)
    # Scoped to the rider and of fixed length, whatever the rider's own key looks like.
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    topup = await payments.create_topup(
        account_id=wallet_id, amount=amount, key=f"ticketing:topup:{rider_id}:{digest}"
    )
    return _topup_read(topup)


async def get_topup(
    db: Database, payments: PaymentsClient, rider_id: uuid.UUID, topup_id: uuid.UUID
) -> TopupRead:
    async with db.transaction() as session:
        rider = await _rider(session, rider_id)
    missing = NotFound(f"You have no top-up {topup_id}.", code="topup_not_found")
    if rider.wallet_account_id is None:
        raise missing
    try:
        topup = await payments.topup(topup_id)
    except NotFound:
        raise missing from None
    if topup.account_id != rider.wallet_account_id:
        raise missing
    return _topup_read(topup)


# Tickets ----------------------------------------------------------------------------------------


def ticket_read(row: Record, now: datetime | None = None) -> TicketRead:
    status = TicketStatus(row.status)
    if status is TicketStatus.active and row.valid_until <= (now or utcnow()):
        status = TicketStatus.expired
    return TicketRead(
        id=row.id,
        purchase_id=row.purchase_id,
        product_code=row.product_code,
        kind=ProductKind(row.kind),
        mode=Mode(row.mode),
        rider_category=RiderCategory(row.rider_category),
        rides=row.rides,
        lines=list(row.lines),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        status=status,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )


async def list_tickets(session: AsyncSession, rider_id: uuid.UUID) -> list[TicketRead]:
    now = utcnow()
    return [
        ticket_read(t, now) for t in await repository.list_tickets(session, rider_id, LIST_LIMIT)
    ]


async def _own_ticket(session: AsyncSession, rider_id: uuid.UUID, ticket_id: uuid.UUID) -> Record:
    ticket = await repository.get_ticket(session, ticket_id, rider_id=rider_id)
    if ticket is None:
        raise NotFound(f"You have no ticket {ticket_id}.", code="ticket_not_found")
    return ticket


async def get_ticket(
    session: AsyncSession, rider_id: uuid.UUID, ticket_id: uuid.UUID
) -> TicketRead:
    return ticket_read(await _own_ticket(session, rider_id, ticket_id))


async def revoke_ticket(session: AsyncSession, ticket_id: uuid.UUID, reason: str) -> TicketRead:
    """Operators: fraud, a refund outside the app… Gates deny it once the event arrives."""
    ticket = await repository.get_ticket(session, ticket_id, lock=True)
    if ticket is None:
        raise NotFound(f"No ticket {ticket_id}.", code="ticket_not_found")
    if ticket.status == TicketStatus.revoked.value:
        return ticket_read(ticket)
    revoked = await repository.revoke_ticket(session, ticket_id, utcnow(), reason)
    device = await repository.active_device(session, ticket.rider_id)
    await add_event(
        session,
        repository.outbox,
        events.TOPIC,
        str(ticket_id),
        events.ticket_revoked(
            revoked, device_key_fingerprint=None if device is None else device.fingerprint
        ),
    )
    return ticket_read(revoked)


# Purchases --------------------------------------------------------------------------------------


def _ticket_lines(product: ProductRead, line: str | None) -> list[str]:
    return [line] if line is not None else list(product.lines)


def _check_sellable(rider: Record, product: ProductRead, body: PurchaseCreate) -> None:
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
        choices = _line_choices(product.mode)
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


def _line_choices(mode: Mode) -> set[str]:
    metro = {line.code for line in LINES}
    bus = {route.code for route in BUS_ROUTES}
    return {Mode.metro: metro, Mode.bus: bus, Mode.any: metro | bus}[mode]


async def _sellable_product(
    session: AsyncSession, rider: Record, body: PurchaseCreate
) -> ProductRead:
    row = await repository.get_product(session, body.product_code)
    if row is None:
        raise Unprocessable(f"No product {body.product_code}.", code="unknown_product")
    product = ProductRead.model_validate(dict(row))
    _check_sellable(rider, product, body)
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
        ticket=None if ticket is None else ticket_read(ticket),
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


async def _wallet_missing(session: AsyncSession, rider_id: uuid.UUID, body: PurchaseCreate) -> bool:
    """Checks the sale first (bad input records nothing and opens nothing)."""
    rider = await _rider(session, rider_id)
    product = await _sellable_product(session, rider, body)
    return _needs_wallet(product) and rider.wallet_account_id is None


async def _record_purchase(
    session: AsyncSession,
    settings: TicketingSettings,
    rider_id: uuid.UUID,
    body: PurchaseCreate,
    request: IdempotentRequest,
) -> Record | None:
    rider = await _rider(session, rider_id, lock=True)
    product = await _sellable_product(session, rider, body)
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
    payments: PaymentsClient,
    settings: TicketingSettings,
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
        open_wallet = existing is None and await _wallet_missing(session, rider_id, body)
    if open_wallet:
        await ensure_wallet(db, payments, rider_id)
    if existing is None:
        async with db.transaction() as session:
            existing = await _record_purchase(session, settings, rider_id, body, request)
    assert existing is not None
    if existing.fingerprint != request.fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different purchase."
        )
    replay = existing.status == PurchaseStatus.completed.value
    return await advance_purchase(db, payments, settings, existing, retry_failed=True), replay


async def advance_purchase(
    db: Database,
    payments: PaymentsClient,
    settings: TicketingSettings,
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
        settled = await _settle(session, purchase.id, charge_id)
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


async def _charge(db: Database, payments: PaymentsClient, purchase: Record) -> uuid.UUID:
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
    session: AsyncSession, purchase_id: uuid.UUID, charge_id: uuid.UUID | None
) -> Record:
    """Issue the ticket of a paid (or free) purchase, once; or mark it for a refund."""
    purchase = await repository.get_purchase(session, purchase_id, lock=True)
    assert purchase is not None
    if purchase.status != PurchaseStatus.pending.value:
        return purchase
    row = await repository.get_product(session, purchase.product_code)
    if row is None:  # withdrawn between the sale and the payment: give the money back
        return await repository.update_purchase(
            session,
            purchase_id,
            status=PurchaseStatus.cancelling.value,
            charge_id=charge_id,
            failure_code="product_withdrawn",
            next_attempt_at=utcnow(),
        )
    product = ProductRead.model_validate(dict(row))
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
        repository.outbox,
        events.TOPIC,
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


async def _compensate(db: Database, payments: PaymentsClient, purchase: Record) -> PurchaseRead:
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
    db: Database, payments: PaymentsClient, settings: TicketingSettings
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
            outcome = await advance_purchase(db, payments, settings, purchase)
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


# Issuer keys and credentials --------------------------------------------------------------------


def key_read(row: Record) -> IssuerKeyRead:
    return IssuerKeyRead(
        kid=row.kid,
        public_key=credentials.b64url(row.public_key),
        status=KeyStatus(row.status),
        created_at=row.created_at,
        not_after=row.not_after,
        retired_at=row.retired_at,
    )


async def key_set(session: AsyncSession) -> KeySet:
    return KeySet(keys=[key_read(k) for k in await repository.list_issuer_keys(session)])


async def _create_issuer_key(session: AsyncSession, keywrap: KeyWrap, now: datetime) -> Record:
    sequence = await repository.next_issuer_key_sequence(session)
    kid = credentials.kid_for(sequence)
    private_key = ticketcodec.generate_device_key()  # an Ed25519 key pair like any other
    return await repository.insert_issuer_key(
        session,
        kid=kid,
        sequence=sequence,
        public_key=ticketcodec.public_key_bytes(private_key),
        private_key_wrapped=keywrap.wrap(kid, private_key),
        status=KeyStatus.active.value,
        created_at=now,
    )


async def ensure_issuer_key(session: AsyncSession, keywrap: KeyWrap) -> Record:
    """The active issuer key, created the first time (replicas agree through a lock)."""
    active = await repository.active_issuer_key(session)
    if active is not None:
        return active
    await repository.lock_issuer_keys(session)
    active = await repository.active_issuer_key(session)
    if active is not None:
        return active
    created = await _create_issuer_key(session, keywrap, utcnow())
    # Gates learn the first key as they learn rotations, without waiting for their next poll.
    await add_event(
        session,
        repository.outbox,
        events.TOPIC,
        events.ISSUER_KEYS_SUBJECT,
        events.issuer_keys_changed((await key_set(session)).keys),
    )
    return created


async def rotate_issuer_key(session: AsyncSession, keywrap: KeyWrap) -> KeySet:
    """A new key signs from now on; the old one retires once its last credential expires."""
    now = utcnow()
    await repository.lock_issuer_keys(session)
    current = await repository.active_issuer_key(session, for_update=True)
    if current is not None:
        last = await repository.last_expiry_signed_by(session, current.kid)
        await repository.update_issuer_key(
            session,
            current.kid,
            status=KeyStatus.retiring.value,
            retiring_at=now,
            not_after=max(last or now, now),
        )
    await _create_issuer_key(session, keywrap, now)
    keys = await key_set(session)
    await add_event(
        session,
        repository.outbox,
        events.TOPIC,
        events.ISSUER_KEYS_SUBJECT,
        events.issuer_keys_changed(keys.keys),
    )
    return keys


async def retire_issuer_keys(session: AsyncSession) -> list[str]:
    """Retire the retiring keys whose credentials have all expired; their kids."""
    retired = await repository.retire_issuer_keys(session, utcnow())
    if retired:
        keys = await key_set(session)
        await add_event(
            session,
            repository.outbox,
            events.TOPIC,
            events.ISSUER_KEYS_SUBJECT,
            events.issuer_keys_changed(keys.keys),
        )
    return [key.kid for key in retired]


def credential_read(
    row: Record, ticket: Record, device: Record, margin: timedelta
) -> CredentialRead:
    refresh_at = (
        row.valid_until if row.valid_until >= ticket.valid_until else row.valid_until - margin
    )
    return CredentialRead(
        ticket_id=row.ticket_id,
        kid=row.kid,
        credential=credentials.b64url(row.credential),
        issuer_signature=credentials.b64url(row.issuer_signature),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        refresh_at=refresh_at,
        device_id=device.id,
        device_fingerprint=device.fingerprint,
    )


async def credential_for(
    session: AsyncSession,
    keywrap: KeyWrap,
    settings: TicketingSettings,
    rider_id: uuid.UUID,
    ticket_id: uuid.UUID,
) -> CredentialRead:
    """The ticket's credential for the rider's active device, signed by the active key.

    The same credential is returned until less than `credential_refresh_margin` of it is left
    (or the signing key changed); then a fresh one is signed.
    """
    now = utcnow()
    ticket = await _own_ticket(session, rider_id, ticket_id)
    if ticket.status == TicketStatus.revoked.value:
        raise Conflict("This ticket was revoked.", code="ticket_revoked")
    if ticket.valid_until <= now:
        raise Conflict("This ticket has expired.", code="ticket_expired")
    device = await repository.active_device(session, rider_id)
    if device is None:
        raise Conflict(
            "Register this phone's public key at POST /v1/devices first.", code="no_active_device"
        )
    key = await ensure_issuer_key(session, keywrap)
    margin = settings.credential_refresh_margin
    latest = await repository.latest_credential(session, ticket.id, device.id, key.kid)
    if latest is not None and (
        latest.valid_until >= ticket.valid_until or latest.valid_until - now > margin
    ):
        return credential_read(latest, ticket, device, margin)
    valid_from, valid_until = credentials.window(
        ticket.valid_from, ticket.valid_until, now, settings.credential_ttl
    )
    signed = ticketcodec.sign_credential(
        credentials.build(
            kid=key.kid,
            ticket_id=ticket.id,
            credential_code=ticket.credential_code,
            category=RiderCategory(ticket.rider_category),
            valid_from=valid_from,
            valid_until=valid_until,
            lines=credentials.scope(Mode(ticket.mode), list(ticket.lines)),
            device_key=device.public_key,
        ),
        keywrap.unwrap(key.kid, key.private_key_wrapped),
    )
    row = await repository.insert_credential(
        session,
        id=new_id(),
        ticket_id=ticket.id,
        device_id=device.id,
        kid=key.kid,
        credential=signed.credential_bytes,
        issuer_signature=signed.issuer_signature,
        valid_from=credentials.from_unix(valid_from),
        valid_until=credentials.from_unix(valid_until),
        issued_at=now,
    )
    return credential_read(row, ticket, device, margin)
