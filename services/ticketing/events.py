"""What ticketing publishes (through its outbox; it consumes nothing).

All on `transit.tickets`:
- `citypass.transit.ticket.issued.v1`, key = ticket id: everything the validation service
  needs to accept the ticket (product rules, validity, device fingerprint, wallet account
  for riders charged per trip at tap-out).
- `citypass.transit.ticket.revoked.v1`, key = ticket id: deny it from now on.
- `citypass.transit.device.registered.v1`, key = rider id: the rider's tickets are now bound
  to this device key.
- `citypass.transit.device.revoked.v1`, key = rider id: deny every credential bound to this
  device key until `deny_until` (after that they have all expired anyway).

Devices are named by `device_key_fingerprint`, the hex SHA-256 of the 32 raw public key bytes
(`device_public_key`, base64url, comes along). Credential line scopes: line or route codes,
`METRO` (every metro line), `BUS` (every bus route) or `*` (everything).
- `citypass.transit.issuer_keys.changed.v1`, key = "issuer-keys": a rotation or retirement;
  the full key set, as `GET /v1/keys` shows it.

Times are RFC 3339 UTC; `valid_from`/`valid_until` also come as unix seconds (`*_unix`), the
form the credential carries.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from services.ticketing.credentials import b64url, unix
from services.ticketing.repository import Record
from services.ticketing.schemas import IssuerKeyRead
from shared.events import (
    DEVICE_REGISTERED,
    DEVICE_REVOKED,
    ISSUER_KEYS_CHANGED,
    TICKET_ISSUED,
    TICKET_REVOKED,
    Event,
)

SOURCE = "/citypass/ticketing"

ISSUER_KEYS_SUBJECT = "issuer-keys"


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def ticket_issued(
    ticket: Record,
    *,
    credential_code: str,
    scope: tuple[str, ...],
    price_vnd: int,
    distance_priced: bool,
    device_key_fingerprint: str | None,
    wallet_account_id: uuid.UUID | None,
) -> Event:
    data: dict[str, Any] = {
        "ticket_id": str(ticket.id),
        "purchase_id": str(ticket.purchase_id),
        "rider_id": str(ticket.rider_id),
        "product_code": ticket.product_code,
        "credential_product": credential_code,
        "kind": ticket.kind,
        "mode": ticket.mode,
        "rider_category": ticket.rider_category,
        "rides": ticket.rides,
        "lines": list(ticket.lines),
        "credential_lines": list(scope),
        "valid_from": _time(ticket.valid_from),
        "valid_until": _time(ticket.valid_until),
        "valid_from_unix": unix(ticket.valid_from),
        "valid_until_unix": unix(ticket.valid_until),
        "price_vnd": price_vnd,
        "distance_priced": distance_priced,
        "device_key_fingerprint": device_key_fingerprint,
        "wallet_account_id": _text(wallet_account_id),
        "issued_at": _time(ticket.created_at),
    }
    return Event(type=TICKET_ISSUED, source=SOURCE, subject=str(ticket.id), data=data)


def ticket_revoked(ticket: Record, *, device_key_fingerprint: str | None) -> Event:
    data = {
        "ticket_id": str(ticket.id),
        "rider_id": str(ticket.rider_id),
        "product_code": ticket.product_code,
        "reason": ticket.revoke_reason,
        "revoked_at": _time(ticket.revoked_at),
        "valid_until": _time(ticket.valid_until),
        "device_key_fingerprint": device_key_fingerprint,
    }
    return Event(type=TICKET_REVOKED, source=SOURCE, subject=str(ticket.id), data=data)


def device_registered(device: Record, *, ticket_ids: list[str]) -> Event:
    data = {
        "device_id": str(device.id),
        "rider_id": str(device.rider_id),
        "device_key_fingerprint": device.fingerprint,
        "device_public_key": b64url(device.public_key),
        "ticket_ids": ticket_ids,
        "registered_at": _time(device.created_at),
    }
    return Event(type=DEVICE_REGISTERED, source=SOURCE, subject=str(device.id), data=data)


def device_revoked(
    device: Record,
    *,
    ticket_ids: list[str],
    replaced_by: str | None,
    deny_until: datetime | None,
) -> Event:
    data = {
        "device_id": str(device.id),
        "rider_id": str(device.rider_id),
        "device_key_fingerprint": device.fingerprint,
        "device_public_key": b64url(device.public_key),
        "reason": device.revoke_reason,
        "revoked_at": _time(device.revoked_at),
        "replaced_by_device_key_fingerprint": replaced_by,
        "ticket_ids": ticket_ids,
        "deny_until": _time(deny_until),
    }
    return Event(type=DEVICE_REVOKED, source=SOURCE, subject=str(device.id), data=data)


def issuer_keys_changed(keys: list[IssuerKeyRead]) -> Event:
    data = {"keys": [key.model_dump(mode="json") for key in keys]}
    return Event(type=ISSUER_KEYS_CHANGED, source=SOURCE, subject=ISSUER_KEYS_SUBJECT, data=data)
