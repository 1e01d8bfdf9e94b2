"""HTTP routes of the ticketing service: parse, call the service, shape the answer."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from starlette.responses import Response

from services.ticketing.auth import CurrentRider, SettingsDep, operator
from services.ticketing.credentials import KeyWrap
from services.ticketing.errors import RefreshTokenReused
from services.ticketing.payments import Payments
from services.ticketing.schemas import (
    CategoryDecision,
    CategoryRequest,
    CredentialRead,
    DeviceCreate,
    DeviceRead,
    KeySet,
    LoginRequest,
    ProductRead,
    PurchaseCreate,
    PurchaseRead,
    RefreshRequest,
    RiderCreate,
    RiderRead,
    SessionRead,
    TicketRead,
    TicketRevoke,
    TopupCreate,
    TopupRead,
    WalletRead,
)
from services.ticketing.service import devices, issuer, products, purchases, riders, tickets, wallet
from shared.app import RuntimeDep, state
from shared.auth import INVALID_TOKEN
from shared.errors import Unauthorized, problems
from shared.fares.versions import NetworkSync
from shared.idempotency import IdempotencyDep
from shared.ids import utcnow
from shared.payments_client import PaymentsUnavailable

logger = logging.getLogger("citypass.ticketing")


PaymentsDep = Annotated[Payments, state("payments")]
KeyWrapDep = Annotated[KeyWrap, state("keywrap")]
NetworkDep = Annotated[NetworkSync, state("network")]
ProductCode = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Z0-9-]+$")]


UNAUTHENTICATED = (401, "No, expired or invalid access token")
PAYMENTS_DOWN = (503, "`payments_unavailable`: payments did not answer; retry later")
NO_NETWORK = (503, "`network_not_loaded`: no network version is in force yet")

router = APIRouter(prefix="/v1")
admin_router = APIRouter(
    prefix="/v1/admin",
    tags=["operators"],
    dependencies=[Depends(operator)],
    responses=problems(INVALID_TOKEN),
)


# Products and keys ------------------------------------------------------------------------------


@router.get(
    "/products",
    response_model=list[ProductRead],
    tags=["products"],
    responses=problems(NO_NETWORK),
)
async def list_products(network: NetworkDep) -> list[ProductRead]:
    """Every fare product on sale now, with prices in VND and who may buy it: those of the
    network version in force (`GET /v1/network/versions`)."""
    return products.catalogue(network.versions, utcnow())


@router.get(
    "/products/{code}",
    response_model=ProductRead,
    tags=["products"],
    responses=problems((404, "`product_not_found`"), NO_NETWORK),
)
async def get_product(code: ProductCode, network: NetworkDep) -> ProductRead:
    """One fare product, as the network version in force sells it."""
    return products.get_product(network.versions, code, utcnow())


@router.get("/keys", response_model=KeySet, tags=["credentials"])
async def list_keys(rt: RuntimeDep) -> KeySet:
    """The issuer public keys (Ed25519) that sign ticket credentials, newest first.

    Gates accept credentials whose `kid` is `active` or `retiring`; a `retiring` key signs
    nothing new and stays valid until `not_after`, when its last credential expires, then it
    becomes `retired` and gates must refuse what it signed. An unknown `kid` is refused.
    Gates should refresh this list periodically (or on `citypass.transit.issuer_keys.changed.v1`).
    """
    async with rt.db.transaction() as session:
        return await issuer.key_set(session)


# Riders and sessions ----------------------------------------------------------------------------


@router.post(
    "/riders",
    response_model=SessionRead,
    status_code=201,
    tags=["riders"],
    responses=problems((409, "`phone_taken`"), (422, "Malformed phone number or password")),
)
async def sign_up(
    body: RiderCreate, rt: RuntimeDep, settings: SettingsDep, payments: PaymentsDep
) -> SessionRead:
    """Create a rider account with a Vietnamese mobile number and a password (8+ characters).

    Phone numbers are accepted in the usual forms (`0912 345 678`, `+84 91 234 5678`) and
    stored as E.164. A concession `category` (student, elderly…) is recorded as a request and
    applies once an operator approves it; until then the rider is `regular`. The answer holds
    the first access and refresh tokens. A payments wallet is opened for the rider.
    """
    password_hash = await riders.prepare_password(body.password, settings)
    async with rt.db.transaction() as session:
        created = await riders.sign_up(session, body, password_hash, settings)
    try:
        created.rider.wallet_account_id = await wallet.ensure_wallet(
            rt.db, payments, created.rider.id
        )
    except PaymentsUnavailable:
        logger.warning("wallet not opened at sign-up; it opens on first use")
    return created


@router.post(
    "/sessions",
    response_model=SessionRead,
    tags=["riders"],
    responses=problems(
        (401, "`invalid_credentials`"),
        (
            429,
            "`too_many_login_failures`: too many wrong passwords for this phone number lately;"
            " `Retry-After` says when to try again",
        ),
    ),
)
async def log_in(body: LoginRequest, rt: RuntimeDep, settings: SettingsDep) -> SessionRead:
    """Log in with phone number and password: a new access token and refresh token.

    After `TICKETING_LOGIN_FAILURE_LIMIT` (5) wrong passwords for one phone number within
    `TICKETING_LOGIN_FAILURE_WINDOW` (15 min), that number is refused until the window ends,
    whether or not it has an account."""
    async with rt.db.transaction() as session:
        created = await riders.log_in(session, body, settings)
    if created is None:
        raise Unauthorized("Wrong phone number or password.", code="invalid_credentials")
    return created


@router.post(
    "/sessions/refresh",
    response_model=SessionRead,
    tags=["riders"],
    responses=problems(
        (
            401,
            "`invalid_refresh_token`, or `refresh_token_reused` (every session of that login "
            "is then revoked)",
        ),
    ),
)
async def refresh_session(
    body: RefreshRequest, rt: RuntimeDep, settings: SettingsDep
) -> SessionRead:
    """Trade the refresh token for a new access token and a new refresh token.

    Each refresh token works once. Presenting one again means it leaked: every token of that
    login is revoked and the rider must log in again.
    """
    try:
        async with rt.db.transaction() as session:
            return await riders.refresh_session(session, body.refresh_token, settings)
    except RefreshTokenReused as reused:
        async with rt.db.transaction() as session:
            await riders.revoke_token_family(session, reused.family_id)
        raise


@router.post("/sessions/revoke", status_code=204, tags=["riders"])
async def log_out(body: RefreshRequest, rt: RuntimeDep) -> Response:
    """Log out: the refresh token (and every token refreshed from the same login) stops
    working. Access tokens expire by themselves within 15 minutes."""
    async with rt.db.transaction() as session:
        await riders.log_out(session, body.refresh_token)
    return Response(status_code=204)


@router.get("/me", response_model=RiderRead, tags=["riders"], responses=problems(UNAUTHENTICATED))
async def me(rider: CurrentRider, rt: RuntimeDep) -> RiderRead:
    """The signed-in rider: category in force, any pending concession request, wallet."""
    async with rt.db.transaction() as session:
        return await riders.get_rider(session, rider.id)


@router.post(
    "/me/category",
    response_model=RiderRead,
    tags=["riders"],
    responses=problems(UNAUTHENTICATED),
)
async def request_category(body: CategoryRequest, rider: CurrentRider, rt: RuntimeDep) -> RiderRead:
    """Ask for a concession category (student, worker, elderly, child, merit, disabled,
    poor_household). It becomes `pending` and applies once an operator approves it; asking for
    `regular` gives a concession up at once."""
    async with rt.db.transaction() as session:
        return await riders.request_category(session, rider.id, body.category)


# Devices ----------------------------------------------------------------------------------------


@router.post(
    "/devices",
    response_model=DeviceRead,
    status_code=201,
    tags=["devices"],
    responses={
        200: {"description": "This key is already the active device", "model": DeviceRead},
        **problems(
            UNAUTHENTICATED,
            (409, "`device_key_reused`: a key that was ever registered cannot come back"),
            (422, "`invalid_public_key`"),
            (429, "`device_switch_limit`: `retry_at` says when the next switch is possible"),
        ),
    },
)
async def register_device(
    body: DeviceCreate, rider: CurrentRider, rt: RuntimeDep, settings: SettingsDep
) -> Response:
    """Register the phone's Ed25519 public key (32 raw bytes, base64url) as the active device.

    Generate the key pair on the phone (non-extractable where the platform allows) and never
    send the private key. A rider has one active device: registering another key revokes the
    previous device, and with it every credential bound to it (gates deny them through
    `citypass.transit.device.revoked.v1`); fetch fresh credentials afterwards. Switching is
    limited (by default 3 switches per 30 days: 429). Registering the active key again
    answers 200 and changes nothing.
    """
    async with rt.db.transaction() as session:
        device, created = await devices.register_device(session, rider.id, body, settings)
    return Response(
        device.model_dump_json(), status_code=201 if created else 200, media_type="application/json"
    )


@router.get(
    "/devices",
    response_model=list[DeviceRead],
    tags=["devices"],
    responses=problems(UNAUTHENTICATED),
)
async def list_devices(rider: CurrentRider, rt: RuntimeDep) -> list[DeviceRead]:
    """The rider's devices, newest first: the active one and the revoked ones."""
    async with rt.db.transaction() as session:
        return await devices.list_devices(session, rider.id)


@router.get(
    "/devices/{device_id}",
    response_model=DeviceRead,
    tags=["devices"],
    responses=problems(UNAUTHENTICATED, (404, "`device_not_found` (or not yours)")),
)
async def get_device(device_id: uuid.UUID, rider: CurrentRider, rt: RuntimeDep) -> DeviceRead:
    """One of the rider's devices."""
    async with rt.db.transaction() as session:
        return await devices.get_device(session, rider.id, device_id)


@router.delete(
    "/devices/{device_id}",
    response_model=DeviceRead,
    tags=["devices"],
    responses=problems(UNAUTHENTICATED, (404, "`device_not_found` (or not yours)")),
)
async def revoke_device(device_id: uuid.UUID, rider: CurrentRider, rt: RuntimeDep) -> DeviceRead:
    """Revoke a device (lost or sold phone): its credentials are denied at the gates from
    now on. Register a new key to travel again. Revoking twice changes nothing."""
    async with rt.db.transaction() as session:
        return await devices.revoke_device(session, rider.id, device_id)


# Purchases and tickets --------------------------------------------------------------------------


@router.post(
    "/purchases",
    response_model=PurchaseRead,
    status_code=201,
    tags=["purchases"],
    responses=problems(
        UNAUTHENTICATED,
        (400, "`idempotency_key_missing`"),
        (402, "`insufficient_funds` (with `shortfall` in VND): nothing charged, no ticket"),
        (403, "`category_not_eligible`: the product is not for the rider's category"),
        (
            409,
            "`payment_in_progress` (the same purchase is being paid: retry shortly) or "
            "`purchase_cancelled`; `purchase_id` says which purchase",
        ),
        (
            422,
            "`unknown_product`, `invalid_line`, `idempotency_key_reused` or an invalid body: "
            "nothing recorded",
        ),
        (
            503,
            "`payments_unavailable`: the purchase (`purchase_id`) stays pending and is "
            "completed or cancelled automatically; retry with the same Idempotency-Key; "
            "or `network_not_loaded` (no network version in force: nothing recorded)",
        ),
    ),
)
async def purchase(
    body: PurchaseCreate,
    key: IdempotencyDep,
    rider: CurrentRider,
    rt: RuntimeDep,
    settings: SettingsDep,
    payments: PaymentsDep,
    network: NetworkDep,
) -> Response:
    """Buy a fare product, paid from the rider's wallet; answers with the issued ticket.

    Send an `Idempotency-Key` (a new UUID per purchase) and reuse it on every retry: the
    purchase is recorded first, the wallet is charged once, and exactly one ticket is issued;
    a retry answers the same purchase (`Idempotent-Replayed: true` once it is complete).
    Keys are the rider's own: another rider's key never collides. Free products (priority
    categories) charge nothing. `METRO-SINGLE` and `STORED-VALUE` charge nothing now: the fare
    is taken from the wallet at tap-out. Products with `line_choice` need `line` (a bus route
    or metro line code).

    If payments cannot be reached the answer is 503 and the purchase stays pending: a worker
    completes it (one charge, one ticket) or cancels it (nothing charged, or refunded) — never
    a ticket without payment nor a payment without a ticket.
    """
    # The purchase row, keyed by (rider, key), is the idempotency record: the kit's one-transaction
    # `Idempotency.call` would hold a connection and a lock across the payment call.
    result, replayed = await purchases.place_purchase(
        rt.db, payments, settings, network, rider.id, body, key
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(result.model_dump_json(), 201, headers, media_type="application/json")


@router.get(
    "/purchases",
    response_model=list[PurchaseRead],
    tags=["purchases"],
    responses=problems(UNAUTHENTICATED),
)
async def list_purchases(rider: CurrentRider, rt: RuntimeDep) -> list[PurchaseRead]:
    """The rider's purchases, newest first (the last 200)."""
    async with rt.db.transaction() as session:
        return await purchases.list_purchases(session, rider.id)


@router.get(
    "/purchases/{purchase_id}",
    response_model=PurchaseRead,
    tags=["purchases"],
    responses=problems(UNAUTHENTICATED, (404, "`purchase_not_found` (or not yours)")),
)
async def get_purchase(purchase_id: uuid.UUID, rider: CurrentRider, rt: RuntimeDep) -> PurchaseRead:
    """One purchase: `pending` until paid, then `completed` with its ticket, or `failed` /
    `cancelled` without one."""
    async with rt.db.transaction() as session:
        return await purchases.get_purchase(session, rider.id, purchase_id)


@router.get(
    "/tickets",
    response_model=list[TicketRead],
    tags=["tickets"],
    responses=problems(UNAUTHENTICATED),
)
async def list_tickets(rider: CurrentRider, rt: RuntimeDep) -> list[TicketRead]:
    """The rider's tickets, newest first (the last 200), with their status."""
    async with rt.db.transaction() as session:
        return await tickets.list_tickets(session, rider.id)


@router.get(
    "/tickets/{ticket_id}",
    response_model=TicketRead,
    tags=["tickets"],
    responses=problems(UNAUTHENTICATED, (404, "`ticket_not_found` (or not yours)")),
)
async def get_ticket(ticket_id: uuid.UUID, rider: CurrentRider, rt: RuntimeDep) -> TicketRead:
    """One of the rider's tickets."""
    async with rt.db.transaction() as session:
        return await tickets.get_ticket(session, rider.id, ticket_id)


@router.get(
    "/tickets/{ticket_id}/credential",
    response_model=CredentialRead,
    tags=["credentials"],
    responses=problems(
        UNAUTHENTICATED,
        (404, "`ticket_not_found` (or not yours)"),
        (409, "`no_active_device`, `ticket_revoked` or `ticket_expired`"),
    ),
)
async def get_credential(
    ticket_id: uuid.UUID,
    rider: CurrentRider,
    rt: RuntimeDep,
    settings: SettingsDep,
    keywrap: KeyWrapDep,
) -> CredentialRead:
    """The ticket's issuer-signed credential, bound to the rider's active device key.

    Keep it on the phone with the device private key; to show the QR, sign it every few
    seconds: `make_dynamic_qr(SignedCredential(credential, issuer_signature, kid), device_key,
    at=now, counter=n)` (`shared.ticketcodec`), and display the text in an alphanumeric QR at
    error-correction level M. No network is needed while the credential is valid; fetch it
    again after `refresh_at` (the same credential comes back until then). After a device
    switch or an issuer key rotation a new credential is signed.
    """
    async with rt.db.transaction() as session:
        return await issuer.credential_for(session, keywrap, settings, rider.id, ticket_id)


# Wallet -----------------------------------------------------------------------------------------


@router.get(
    "/wallet",
    response_model=WalletRead,
    tags=["wallet"],
    responses=problems(UNAUTHENTICATED, PAYMENTS_DOWN),
)
async def get_wallet(rider: CurrentRider, rt: RuntimeDep, payments: PaymentsDep) -> WalletRead:
    """The rider's wallet and its available balance in VND (kept by the payments service)."""
    return await wallet.wallet(rt.db, payments, rider.id)


@router.post(
    "/wallet/topups",
    response_model=TopupRead,
    status_code=201,
    tags=["wallet"],
    responses=problems(
        UNAUTHENTICATED,
        (400, "`idempotency_key_missing`"),
        (409, "A request with this Idempotency-Key is in progress"),
        (422, "Invalid amount, or `idempotency_key_reused`"),
        PAYMENTS_DOWN,
    ),
)
async def create_topup(
    body: TopupCreate,
    key: IdempotencyDep,
    rider: CurrentRider,
    rt: RuntimeDep,
    payments: PaymentsDep,
) -> TopupRead:
    """Top up the wallet: a dynamic VietQR for exactly `amount` VND (10,000 to 10,000,000).

    Show `qr` to the rider, who pays it from any Vietnamese bank app; the wallet is credited
    when the bank confirms the transfer (`status` becomes `paid`). Retrying with the same
    `Idempotency-Key` returns the same top-up.
    """
    return await wallet.create_topup(rt.db, payments, rider.id, body.amount, key.key)


@router.get(
    "/wallet/topups/{topup_id}",
    response_model=TopupRead,
    tags=["wallet"],
    responses=problems(UNAUTHENTICATED, (404, "`topup_not_found` (or not yours)"), PAYMENTS_DOWN),
)
async def get_topup(
    topup_id: uuid.UUID, rider: CurrentRider, rt: RuntimeDep, payments: PaymentsDep
) -> TopupRead:
    """One of the rider's top-ups: `pending` until the bank transfer arrives, then `paid`."""
    return await wallet.get_topup(rt.db, payments, rider.id, topup_id)


# Operators --------------------------------------------------------------------------------------


@admin_router.get("/category-requests", response_model=list[RiderRead])
async def category_requests(rt: RuntimeDep) -> list[RiderRead]:
    """Riders waiting for a concession category decision, oldest first."""
    async with rt.db.transaction() as session:
        return await riders.category_requests(session)


@admin_router.post(
    "/riders/{rider_id}/category",
    response_model=RiderRead,
    responses=problems((404, "`rider_not_found`"), (409, "`no_pending_request`")),
)
async def decide_category(rider_id: uuid.UUID, body: CategoryDecision, rt: RuntimeDep) -> RiderRead:
    """Approve (the requested category applies at once) or reject a concession request,
    after checking the rider's papers (student card, ID, merit or disability certificate…)."""
    async with rt.db.transaction() as session:
        return await riders.decide_category(session, rider_id, body)


@admin_router.post(
    "/tickets/{ticket_id}/revoke",
    response_model=TicketRead,
    responses=problems((404, "`ticket_not_found`")),
)
async def revoke_ticket(ticket_id: uuid.UUID, body: TicketRevoke, rt: RuntimeDep) -> TicketRead:
    """Revoke a ticket: gates deny it once `citypass.transit.ticket.revoked.v1` reaches them,
    and no new credential is signed for it. Revoking twice changes nothing."""
    async with rt.db.transaction() as session:
        return await tickets.revoke_ticket(session, ticket_id, body.reason)


@admin_router.post("/issuer-keys/rotate", response_model=KeySet)
async def rotate_issuer_key(rt: RuntimeDep, keywrap: KeyWrapDep) -> KeySet:
    """Rotate the issuer signing key: a new key signs every credential from now on.

    The previous key becomes `retiring`: gates keep accepting what it signed until
    `not_after` (when the last of those credentials expires, at most `TICKETING_CREDENTIAL_TTL`
    away); then it is `retired` automatically and its credentials are refused. Phones get
    credentials signed by the new key at their next refresh.
    """
    async with rt.db.transaction() as session:
        return await issuer.rotate_issuer_key(session, keywrap)
