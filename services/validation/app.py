"""Builds the validation service: the gate decision hot path (Redis and Kafka, no database)."""

from __future__ import annotations

import time
from functools import partial

from fastapi import FastAPI

from services.validation import decisions, endpoints, network, repository, scripts
from services.validation.fare_worker import FareWorker
from services.validation.memory import Memory, VerifiedSignatures
from services.validation.network import Networks
from services.validation.outbox import Outbox
from services.validation.service import Validator
from services.validation.settings import ValidationSettings
from services.validation.tasks import Workers
from shared.app import Runtime, create_app, supervised
from shared.events import LEDGER_TOPIC, TICKETS_TOPIC, VALIDATIONS_TOPIC
from shared.kafka import Consumer

DESCRIPTION = """\
Metro gates and bus validators: the network model, gate provisioning, and the QR decision.

**Gates** sign every request (`gateSignature`: `X-Device-Id`, `X-Device-Timestamp`,
`X-Device-Nonce`, `X-Device-Signature`; see `shared/devicesigning.py` for the signer).
Unsigned, unknown, disabled, stale or replayed requests get a 401 problem with its `code`.
**Operators** provision gates and issuer keys with `Authorization: Bearer <admin token>`.

A decision (`POST /v1/validations`) is taken from memory and one Redis round trip, which also
appends its event to a Redis stream: the event is durable before the gate hears the answer, and
a relay moves it to Kafka (`transit.validations`) without the gate waiting, whenever the broker
answers. Gates that lose the network decide from a signed bundle
(`GET /v1/gate-bundle`) and upload their decisions later (`POST /v1/validations/batch`).
"""


def build_app(settings: ValidationSettings | None = None) -> FastAPI:
    settings = settings or ValidationSettings()
    runtime = Runtime("validation", settings, uses_redis=True)
    redis = runtime.kv
    memory = Memory(VerifiedSignatures(settings.credential_cache_size))
    networks = Networks()
    outbox = Outbox(
        redis,
        runtime.publisher,
        settings.instance_id,
        builders=decisions.builders(networks),
        batch_size=settings.relay_batch_size,
        retry_interval_s=settings.relay_retry_interval.total_seconds(),
        claim_after_s=settings.relay_claim_after.total_seconds(),
        standby=settings.relay_standby,
    )
    validator = Validator(settings, redis, memory, outbox, networks)
    workers = Workers(settings, redis, memory, outbox)
    fares = FareWorker(settings, redis, outbox, lambda: networks.versions)
    bootstrap = settings.kafka_bootstrap_servers
    consumers = [
        Consumer(
            bootstrap,
            [TICKETS_TOPIC],
            f"validation-deny-{settings.instance_id}",  # every process needs every entry
            workers.on_ticket_event,
            publisher=runtime.publisher,
        ),
    ]
    fare_consumers = [
        Consumer(
            bootstrap,
            [VALIDATIONS_TOPIC],
            "validation-fares",
            fares.on_validation_event,
            publisher=runtime.publisher,
        ),
        Consumer(
            bootstrap,
            [LEDGER_TOPIC],
            "validation-topups",
            fares.on_ledger_event,
            publisher=runtime.publisher,
        ),
    ]
    runtime.workers += [
        supervised("event-relay", outbox.run),
        supervised("state-refresh", workers.refresh_state),
        supervised("issuer-keys", workers.poll_issuer_keys),
        supervised("deny-list-clean-up", workers.drop_expired_revocations),
    ]
    if settings.ticketing_url:
        interval_s = settings.network_refresh.total_seconds()
        follow = partial(
            network.follow_ticketing,
            networks,
            settings.ticketing_url,
            settings.currency,
            interval_s,
        )
        runtime.workers.append(supervised("network-versions", follow))
    if settings.run_fare_worker:
        consumers += fare_consumers
        runtime.workers += [
            supervised("trip-sweeper", workers.sweep_trips),
            supervised("unpaid-fares", fares.recheck_unpaid),
        ]
    runtime.workers += [supervised(f"consumer-{c.group_id}", c.run) for c in consumers]

    async def start() -> None:
        await repository.adopt_old_key_layout(redis)
        await scripts.load_scripts(redis)
        await outbox.start()
        await workers.load_configured_keys()
        await network.load_once(
            networks, settings.ticketing_url, settings.network_feed, settings.currency
        )
        memory.apply(await repository.load_state(redis), int(time.time()))

    async def stop() -> None:
        for consumer in consumers:
            consumer.stop()
        await outbox.drain(timeout_s=2 * runtime.publisher.send_timeout_s)
        await fares.close()
        await validator.decision_redis.close()

    runtime.on_stop.append(stop)
    app = create_app(
        runtime,
        endpoints.routers,
        title="CityPass validation",
        description=DESCRIPTION,
        on_start=[start],
        hot_routes=endpoints.hot.bind(validator),
    )
    app.state.settings = settings
    app.state.validator = validator
    app.state.workers = workers
    app.state.fares = fares
    app.state.outbox = outbox
    return app
