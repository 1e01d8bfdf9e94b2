"""Builds the ticketing service: riders, devices, fare products, purchases, credentials."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.ticketing import endpoints, fare_relay, network_endpoints, tables, tasks, webapp
from services.ticketing.credentials import KeyWrap
from services.ticketing.payments import Payments
from services.ticketing.service import issuer, network
from services.ticketing.settings import TicketingSettings
from shared.app import Runtime, create_app, supervised
from shared.outbox import OutboxRelay

logger = logging.getLogger("citypass.ticketing")

DESCRIPTION = """\
Fare products, riders, devices, purchases and signed dynamic-QR credentials for Hanoi transit.

**Riders** sign up (`POST /v1/riders`) or log in (`POST /v1/sessions`) with a Vietnamese
mobile number and a password and get a 15-minute access token (`Authorization: Bearer …`)
plus a single-use refresh token (`POST /v1/sessions/refresh`).

**The phone** creates an Ed25519 key pair, keeps the private key, registers the public key
(`POST /v1/devices`), buys (`POST /v1/purchases`, with an `Idempotency-Key`) and fetches each
ticket's issuer-signed credential (`GET /v1/tickets/{id}/credential`). Every few seconds it
signs the dynamic QR itself with `shared.ticketcodec.make_dynamic_qr`: the server never holds
a device key and never renders a rider's QR, so the QR keeps working offline.

**Gates** verify credentials with the issuer public keys of `GET /v1/keys` (active and
retiring keys are valid; a retired key's credentials must be refused).

**Operators** (`Authorization: Bearer <TICKETING_OPERATOR_TOKEN>`) approve concession
categories, revoke tickets and rotate the issuer key under `/v1/admin`, and import the
network and its fares (a GTFS + GTFS-Fares v2 feed) as versions that take effect at a given
instant (`POST /v1/network/versions`). Products and prices are those of the version in force;
the versions and their feeds are public (`GET /v1/network/versions`).

**The rider web app** (`/app/`, built by `make app`) does all of the above in a phone's browser:
its device key is a non-extractable WebCrypto Ed25519 key, and it signs the dynamic QR offline.

Events go to Kafka topic `transit.tickets` through the outbox (see `services/ticketing/events.py`).
"""


def build_app(settings: TicketingSettings | None = None) -> FastAPI:
    settings = settings or TicketingSettings()
    runtime = Runtime("ticketing", settings, schema="ticketing")
    payments = Payments(
        settings.payments_url,
        settings.payments_service_token.get_secret_value(),
        timeout_s=settings.payments_timeout_s,
    )
    runtime.on_stop.append(payments.close)
    keywrap = KeyWrap(settings.issuer_key_encryption_key.get_secret_value())
    relay = OutboxRelay("ticketing", runtime.db, tables.outbox, runtime.publisher)
    versions = network.network_sync(runtime.db, settings.currency)
    runtime.workers += [
        supervised("outbox-relay", relay.run),
        supervised(
            "purchase-reconciler",
            tasks.purchase_reconciler(runtime.db, payments, settings, versions),
        ),
        supervised("network-refresh", tasks.network_refresh(versions, settings)),
        supervised("key-retirement", tasks.key_retirement(runtime.db, settings)),
    ]

    async def ensure_issuer_key() -> None:
        async with runtime.db.transaction() as session:
            key = await issuer.ensure_issuer_key(session, keywrap)
            keywrap.unwrap(key.kid, key.private_key_wrapped)  # a wrong KEK shows at start-up
        logger.info("issuer key %s is active", key.kid)

    async def load_network() -> None:
        loaded = await versions.refresh()
        if not loaded:
            logger.warning("no network version yet: import one (citypass network import FEED)")

    app = create_app(
        runtime,
        [
            endpoints.router,
            fare_relay.router,
            endpoints.admin_router,
            network_endpoints.router,
            webapp.router(),
        ],
        title="CityPass ticketing",
        description=DESCRIPTION,
        on_start=[ensure_issuer_key, load_network],
    )
    app.state.payments = payments
    app.state.keywrap = keywrap
    app.state.network = versions
    return app
