"""Stored-value fares, charged through the real payments service after the gate has answered."""

from __future__ import annotations

import time

import httpx

from citypass.servers import LocalServers
from services.validation import repository
from services.validation.service import Validator
from services.validation.tasks import Workers
from shared.kafka import Publisher
from tests.support import committed_past, read_events, wait_until
from tests.validation.conftest import (
    HANOI_FARES,
    balance,
    balance_is,
    open_wallet,
    provision_gate,
    scan,
    stored_value_ticket,
    top_up,
)


class TestDistanceFare:
    async def test_exit_charges_the_distance_fare_once(
        self,
        http: httpx.AsyncClient,
        payments: httpx.AsyncClient,
        publisher: Publisher,
        validator: Validator,
        servers: LocalServers,
    ) -> None:
        wallet = await open_wallet(payments)
        await top_up(payments, wallet, 50_000)
        ticket = await stored_value_ticket(publisher, validator, wallet)
        entry = await provision_gate(http, station="2A-01", direction="entry")
        exit_ = await provision_gate(http, station="2A-09", direction="exit")

        entered = await scan(http, entry, ticket.qr())
        exited = await scan(http, exit_, ticket.qr())

        fare = HANOI_FARES.trip_fare("2A-01", "2A-09")
        assert fare == 13_000  # 9.2 km: 8,000 for 5 km, then 1,000 per started km
        assert (entered["decision"], entered["fare"]) == ("accept", None)
        assert (exited["decision"], exited["action"], exited["fare"]) == ("accept", "exit", fare)
        assert "13.000 đ" in exited["message_vi"]
        await wait_until(
            lambda: balance_is(payments, wallet, 50_000 - fare), what="the fare to be charged"
        )

        # Kafka delivers at least once: the same event again must not charge twice.
        [(event, _)] = await read_events(
            servers.kafka_bootstrap,
            "transit.validations",
            lambda e: e.id == exited["validation_id"],
            1,
        )
        producer = await publisher.connect()
        sent = await producer.send_and_wait(
            "transit.validations", event.value(), key=ticket.id.encode(), headers=event.headers()
        )
        # The fare group commits a record's offset once it has handled it: past the copy's
        # offset, the copy was handled (other records bump the group's counters too).
        await wait_until(
            lambda: committed_past(servers.kafka_bootstrap, "validation-fares", sent),
            what="the redelivered event handled",
        )
        assert await balance(payments, wallet) == 50_000 - fare

    async def test_unpaid_fare_denies_the_ticket_until_a_top_up(
        self,
        http: httpx.AsyncClient,
        payments: httpx.AsyncClient,
        publisher: Publisher,
        validator: Validator,
    ) -> None:
        wallet = await open_wallet(payments)
        await top_up(payments, wallet, 5_000)
        ticket = await stored_value_ticket(publisher, validator, wallet)
        gate = await provision_gate(http, station="3-01", direction="both")
        far = await provision_gate(http, station="3-08", direction="both")
        fare = HANOI_FARES.trip_fare("3-01", "3-08")

        assert (await scan(http, gate, ticket.qr()))["action"] == "entry"
        assert (await scan(http, far, ticket.qr()))["fare"] == fare
        await wait_until(lambda: ticket.id in validator.memory.deny_tickets, what="the deny entry")

        refused = await scan(http, gate, ticket.qr())
        assert (refused["decision"], refused["reason"]) == ("reject", "insufficient_balance")
        assert refused["message_en"] == "Insufficient balance, top up"

        await top_up(payments, wallet, 20_000)
        await wait_until(
            lambda: ticket.id not in validator.memory.deny_tickets, what="the top-up to lift it"
        )
        assert await balance(payments, wallet) == 5_000 + 20_000 - fare
        assert (await scan(http, gate, ticket.qr()))["decision"] == "accept"


class TestTripsLeftOpen:
    async def test_sweeper_closes_an_overdue_trip_at_the_maximum_fare(
        self,
        http: httpx.AsyncClient,
        payments: httpx.AsyncClient,
        publisher: Publisher,
        validator: Validator,
        workers: Workers,
    ) -> None:
        wallet = await open_wallet(payments)
        await top_up(payments, wallet, 30_000)
        ticket = await stored_value_ticket(publisher, validator, wallet)
        gate = await provision_gate(http, station="2A-05", direction="both")
        entered = await scan(http, gate, ticket.qr())
        member = f"{ticket.id}|{entered['validation_id']}"
        await wait_until(
            lambda: validator.redis.zscore(repository.OPEN_TRIPS, member), what="trip indexed"
        )

        closed = await workers.close_overdue_trips(int(time.time()) + workers.max_trip_s + 1)

        assert closed >= 1
        await wait_until(
            lambda: balance_is(payments, wallet, 30_000 - HANOI_FARES.max_trip_fare("2A-05")),
            what="the maximum fare",
        )
        assert (await scan(http, gate, ticket.qr()))["action"] == "entry"  # the trip was closed

    async def test_next_tap_after_the_maximum_trip_time_starts_a_new_trip(
        self,
        http: httpx.AsyncClient,
        payments: httpx.AsyncClient,
        publisher: Publisher,
        validator: Validator,
    ) -> None:
        wallet = await open_wallet(payments)
        await top_up(payments, wallet, 30_000)
        ticket = await stored_value_ticket(publisher, validator, wallet)
        entry = await provision_gate(http, station="3-02", direction="entry")
        assert (await scan(http, entry, ticket.qr()))["decision"] == "accept"
        overdue = int(time.time()) - int(validator.settings.max_trip.total_seconds()) - 60
        await validator.redis.hset(repository.ticket_key(ticket.id), "trip_at", str(overdue))

        again = await scan(http, entry, ticket.qr())

        assert (again["decision"], again["action"]) == ("accept", "entry")
        await wait_until(
            lambda: balance_is(payments, wallet, 30_000 - HANOI_FARES.max_trip_fare("3-02")),
            what="the maximum fare of the abandoned trip",
        )
