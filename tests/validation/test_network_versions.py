"""Network versions at the gates: ticketing publishes a version ahead, every validation process
(two replicas here) switches at its effective instant without a restart; a decision is priced
by the version in force when it was taken (a late upload, a relayed event, an offline gate)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
import pytest
from fastapi import FastAPI

from citypass.gate import OfflineValidator
from services.validation import decisions, repository
from services.validation.app import build_app
from services.validation.fare_worker import FareWorker
from services.validation.network import GateNetworks, GateVersion
from services.validation.rules import Direction, FareTable, GatePlace
from services.validation.service import Validator
from shared.fares.feed import read_feed
from shared.fares.lines import NetworkMap
from shared.fares.tariff import Leg
from shared.kafka import Publisher
from tests.conftest import AppClient
from tests.fares.support import edited
from tests.operator.conftest import serve
from tests.support import wait_until
from tests.validation.conftest import (
    ADMIN,
    HANOI_FARES,
    HANOI_FEED,
    PublishedVersions,
    Ticket,
    hanoi_zip,
    make_ticket,
    open_wallet,
    provision_gate,
    scan,
    ticket_issued,
    top_up,
    validation_body,
    validation_settings,
)
from tests.validation.test_fare_capping import accepted, deliver, postings
from tests.validation.test_offline import fetch_bundle, upload

SWITCH_IN_S = 6  # the new version takes effect this long after the test publishes it
OLD_FARE, NEW_FARE = 8_000, 9_000  # a short bus route (09), before and after


SHORT_BUS = "BUS-SINGLE-SHORT,Vé lượt xe buýt (short),regular,,"


def dearer_short_bus(target: Path) -> Path:
    return edited(target, "fare_products", f"{SHORT_BUS}8000,VND", f"{SHORT_BUS}{NEW_FARE},VND")


async def stored_value(
    publisher: Publisher, validator: Validator, wallet: str | None = None
) -> Ticket:
    ticket = make_ticket(product="STORED-VALUE", lines=("*",))
    issued = ticket_issued(
        ticket, kind="stored_value", wallet_account_id=wallet or str(uuid.uuid4())
    )
    await publisher.publish("transit.tickets", ticket.id, issued)
    await wait_until(lambda: "STORED-VALUE" in validator.memory.products, what="the product")
    await wait_until(
        lambda: validator.redis.exists(repository.ticket_key(ticket.id)), what="the ticket"
    )
    return ticket


@pytest.fixture
async def ticketing() -> AsyncIterator[tuple[str, PublishedVersions]]:
    """A ticketing double serving the two network endpoints from real feed zips."""
    published = PublishedVersions()
    published.publish(datetime.fromtimestamp(0, UTC), hanoi_zip())
    app = FastAPI()
    published.route(app)
    async with serve(app) as url:
        yield url, published


class TestVersionSwitch:
    async def test_replicas_switch_at_the_effective_instant_and_price_late_uploads_as_then(
        self,
        app_client: AppClient,
        publisher: Publisher,
        ticketing: tuple[str, PublishedVersions],
        tmp_path: Path,
    ) -> None:
        url, published = ticketing
        settings = {
            "ticketing_url": url,
            "network_feed": None,
            "network_refresh": 0.3,
            "run_fare_worker": False,
        }
        one, two = (build_app(validation_settings(tmp_path, **settings)) for _ in range(2))
        validator: Validator = one.state.validator
        async with app_client(one) as first, app_client(two) as second:
            switch_at = int(time.time()) + SWITCH_IN_S
            published.publish(
                datetime.fromtimestamp(switch_at, UTC), hanoi_zip(dearer_short_bus(tmp_path))
            )
            replicas: list[Validator] = [one.state.validator, two.state.validator]
            await wait_until(
                lambda: all(len(r.networks.held.versions) == 2 for r in replicas),
                what="the version published ahead, in both replicas",
            )
            bus = await provision_gate(first, route="09")
            offline_bus = await provision_gate(first, route="09")
            await wait_until(
                lambda: all(bus.gate_id in r.memory.places for r in replicas),
                what="the gate, in both replicas",
            )
            ticket = await stored_value(publisher, validator)
            late = await stored_value(publisher, validator)
            signed, public_key = await fetch_bundle(first, offline_bus)
            offline = OfflineValidator.from_signed(signed, public_key)

            before = [await scan(http, bus, ticket.qr()) for http in (first, second)]
            offline_before = offline.decide(late.qr())
            await asyncio.sleep(max(0.0, switch_at - time.time() + 0.2))
            after = [
                await scan(http, bus, (await stored_value(publisher, validator)).qr())
                for http in (first, second)
            ]
            uploaded = await upload(first, offline_bus, offline)
            offline_after = offline.decide((await stored_value(publisher, validator)).qr())

        assert [d["fare"] for d in before] == [OLD_FARE, None]  # the 2nd tap is passback
        assert before[1]["reason"] == "already_inside"
        assert [d["fare"] for d in after] == [NEW_FARE, NEW_FARE]
        # The offline gate switched at the same second, from its bundle alone.
        assert (offline_before.fare, offline_after.fare) == (OLD_FARE, NEW_FARE)
        # Uploaded after the switch, the tap taken before it pays the old fare.
        fares = {r["validation_id"]: r["fare"] for r in uploaded["results"]}
        assert fares[offline_before.validation_id] == OLD_FARE


class TestFareWorkerAgrees:
    async def test_stored_value_legs_are_charged_the_gates_fare_at_their_time(
        self,
        app_client: AppClient,
        publisher: Publisher,
        payments: httpx.AsyncClient,
        ledger_db: asyncpg.Connection,
        payments_url: str,
        ticketing: tuple[str, PublishedVersions],
        tmp_path: Path,
    ) -> None:
        """Bus 09 goes from 8,000 to 9,000 at T: the gates' FareTable and the fare worker (the
        same process's versions, money read from payments' ledger) agree on every leg, before
        T, after T, and for a tap taken before T but uploaded and priced after it."""
        url, published = ticketing
        settings = {"ticketing_url": url, "network_feed": None, "network_refresh": 0.3}
        app = build_app(
            validation_settings(
                tmp_path, **settings, payments_url=payments_url, run_fare_worker=False
            )
        )
        validator: Validator = app.state.validator
        fares: FareWorker = app.state.fares
        async with app_client(app) as http:
            bus = await provision_gate(http, route="09")
            offline_bus = await provision_gate(http, route="09")
            riders = []
            for _ in range(3):
                wallet = await open_wallet(payments)
                await top_up(payments, wallet, 50_000)
                riders.append((await stored_value(publisher, validator, wallet), wallet))
            (early, early_wallet), (later, later_wallet), (late, late_wallet) = riders
            # The version ahead is published once everything else is ready, so that the taps
            # before it do not race the set-up on a slow machine.
            switch_at = int(time.time()) + SWITCH_IN_S
            published.publish(
                datetime.fromtimestamp(switch_at, UTC), hanoi_zip(dearer_short_bus(tmp_path))
            )
            await wait_until(
                lambda: len(validator.networks.held.versions) == 2, what="the version ahead"
            )
            signed, public_key = await fetch_bundle(http, offline_bus)  # knows the tickets
            offline = OfflineValidator.from_signed(signed, public_key)

            tapped: list[tuple[str, str, int, int | None]] = []  # ticket, wallet, at, gate fare
            decided = await scan(http, bus, early.qr())
            tapped.append((early.id, early_wallet, int(time.time()), decided["fare"]))
            offline_tap = offline.decide(late.qr())
            late_tap = (late.id, late_wallet, int(time.time()), offline_tap.fare)
            # The leg before T is priced before T (the version ahead is already held).
            await deliver(fares, accepted(*tapped[0][:2], bus_leg(decided, tapped[0][2])))
            assert time.time() < switch_at

            await asyncio.sleep(max(0.0, switch_at - time.time() + 0.2))
            at = int(time.time())
            decided_after = await scan(http, bus, later.qr())
            tapped.append((later.id, later_wallet, at, decided_after["fare"]))
            await deliver(fares, accepted(later.id, later_wallet, bus_leg(decided_after, at)))
            uploaded = await upload(http, offline_bus, offline)
            [result] = uploaded["results"]
            tapped.append((*late_tap[:3], result["fare"]))
            await deliver(fares, accepted(late.id, late_wallet, bus_leg(result, late_tap[2])))

        assert [fare for *_, fare in tapped] == [OLD_FARE, NEW_FARE, OLD_FARE]
        assert offline_tap.fare == OLD_FARE
        for _, wallet, at, gate_fare in tapped:
            assert validator.networks.at(at).bus_fare("09") == gate_fare
            assert await postings(ledger_db, wallet) == [("charge", gate_fare)]


def bus_leg(decided: dict[str, Any], at: int) -> Leg:
    """The leg a stored-value bus tap closes, as its `validation.accepted` event carries it."""
    return Leg(decided["validation_id"], "09", at, at)


class TestBundle:
    async def test_carries_every_version_starting_before_it_expires(
        self,
        app_client: AppClient,
        ticketing: tuple[str, PublishedVersions],
        tmp_path: Path,
    ) -> None:
        url, published = ticketing
        now = int(time.time())
        published.publish(
            datetime.fromtimestamp(now + 3600, UTC), hanoi_zip(dearer_short_bus(tmp_path))
        )
        published.publish(datetime.fromtimestamp(now + 30 * 3600, UTC), hanoi_zip())
        settings = validation_settings(tmp_path, ticketing_url=url, network_feed=None)
        async with app_client(build_app(settings)) as http:
            gate = await provision_gate(http, route="09")
            signed, public_key = await fetch_bundle(http, gate)
        offline = OfflineValidator.from_signed(signed, public_key)

        starts = [table.effective_from for table in offline.fares]
        assert starts == [0, now + 3600]  # the one after the 6-hour bundle is left out
        assert offline.fares_at(now).bus_fare("09") == OLD_FARE
        assert offline.fares_at(now + 3600).bus_fare("09") == NEW_FARE


class TestWithoutNetwork:
    async def test_nothing_is_decided_without_a_network_version(
        self, app_client: AppClient, http: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        gate = await provision_gate(http, station="2A-01")  # by a process that has one
        settings = validation_settings(tmp_path, network_feed=None)
        async with app_client(build_app(settings)) as bare:
            body = validation_body(gate, make_ticket().qr())
            decided = await bare.post(
                "/v1/validations",
                content=body,
                headers=gate.headers("POST", "/v1/validations", body),
            )
            lines = await bare.get("/v1/lines")
            provisioned = await bare.post(
                "/v1/gates", json={"gate_id": "N-1", "station": "2A-01"}, headers=ADMIN
            )

        assert (decided.status_code, decided.json()["code"]) == (503, "network_not_loaded")
        assert (lines.status_code, lines.json()["code"]) == (503, "network_not_loaded")
        assert (provisioned.status_code, provisioned.json()["code"]) == (422, "validation_error")


class TestRelayedEvents:
    def test_an_event_rebuilt_after_a_switch_keeps_the_fare_of_its_decision(
        self, tmp_path: Path
    ) -> None:
        dearer = read_feed(dearer_short_bus(tmp_path))
        switch = 1_800_000_000
        networks = GateNetworks(
            [
                GateVersion(HANOI_FARES, NetworkMap.of(HANOI_FEED)),
                GateVersion(
                    FareTable.from_feed("v2", switch, dearer, switch), NetworkMap.of(dearer)
                ),
            ]
        )
        gate_place = GatePlace("BUS-09", None, "09", Direction.both)
        reply = "ok|tap|stored_value||wallet-1|5000||||||"
        fares: dict[int, Any] = {}
        for decided_at in (switch - 1, switch):
            ctx = decisions.context(
                "v", decided_at, decided_at, gate_place, networks.at(decided_at), detail=None
            )
            ctx.update(ticket=str(uuid.uuid4()), product="STORED-VALUE", category="regular")
            [(_, _, value, _)] = decisions.decision_records(networks, ctx, reply)
            fares[decided_at] = orjson.loads(value)["fare"]

        assert fares == {switch - 1: OLD_FARE, switch: NEW_FARE}
