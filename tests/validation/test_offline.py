"""Offline gates: a signed bundle, decisions without the network, reconciliation on upload."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import orjson
import pytest

from citypass.gate import OfflineValidator
from citypass.servers import LocalServers
from services.validation.bundle import BundleError, open_bundle
from services.validation.memory import decode_public_key
from services.validation.service import Validator
from shared.events import Event
from shared.kafka import Publisher
from tests.support import read_events, wait_until
from tests.validation.conftest import (
    HANOI_FARES,
    Gate,
    balance_is,
    make_ticket,
    open_wallet,
    provision_gate,
    scan,
    stored_value_ticket,
    top_up,
)


async def fetch_bundle(http: httpx.AsyncClient, gate: Gate) -> tuple[dict[str, Any], bytes]:
    key = await http.get("/v1/gate-bundle/key")
    signed = await http.get(
        "/v1/gate-bundle", headers=gate.signer.headers("GET", "/v1/gate-bundle")
    )
    assert signed.status_code == 200, signed.text
    return signed.json(), decode_public_key(key.json()["public_key"])


async def offline_gate(http: httpx.AsyncClient, gate: Gate) -> OfflineValidator:
    signed, public_key = await fetch_bundle(http, gate)
    return OfflineValidator.from_signed(signed, public_key)


async def upload(
    http: httpx.AsyncClient, gate: Gate, validator: OfflineValidator
) -> dict[str, Any]:
    body = orjson.dumps({"gate_id": gate.gate_id, "decisions": validator.state.queue})
    response = await http.post(
        "/v1/validations/batch",
        content=body,
        headers=gate.headers("POST", "/v1/validations/batch", body),
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


class TestBundle:
    async def test_is_signed_by_the_published_key_and_carries_the_deny_list(
        self, http: httpx.AsyncClient, publisher: Publisher, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="2A-11", direction="entry")
        revoked = make_ticket()
        await publisher.publish(
            "transit.tickets",
            revoked.id,
            Event(
                type="citypass.transit.ticket.revoked.v1",
                source="/citypass/ticketing",
                subject=revoked.id,
                data={"ticket_id": revoked.id},
            ),
        )
        await wait_until(lambda: revoked.id in validator.memory.deny_tickets, what="revocation")

        signed, public_key = await fetch_bundle(http, gate)
        content = open_bundle(signed, public_key, now=int(time.time()))

        assert content["gate"]["gate_id"] == gate.gate_id
        assert "t1" in {k["kid"] for k in content["issuer_keys"]}
        assert content["deny"]["tickets"][revoked.id][0] == "revoked_ticket"
        [in_force] = content["fares"]  # the tests' only version, in force since the epoch
        assert in_force["metro"]["2A-01"]["2A-12"] == 16_000

    async def test_tampered_or_foreign_bundle_is_refused(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-12")
        signed, public_key = await fetch_bundle(http, gate)
        payload = orjson.loads(base64.urlsafe_b64decode(signed["payload"] + "=="))
        payload["deny"] = {"tickets": {}, "devices": {}}
        forged = {
            **signed,
            "payload": base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode(),
        }

        with pytest.raises(BundleError, match="signature"):
            open_bundle(forged, public_key, now=0)
        with pytest.raises(BundleError, match="published key"):
            open_bundle(signed, bytes(32), now=0)
        with pytest.raises(BundleError, match="expired"):
            open_bundle(signed, public_key, now=2**40)

    async def test_needs_a_signed_request(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/v1/gate-bundle")

        assert (response.status_code, response.json()["code"]) == (401, "unsigned_request")


class TestOfflineDecisions:
    async def test_gate_decides_from_its_bundle_and_replay_cache(
        self, http: httpx.AsyncClient
    ) -> None:
        gate = await provision_gate(http, station="3-05", direction="entry")
        offline = await offline_gate(http, gate)
        ticket = make_ticket()
        qr = ticket.qr()

        first = offline.decide(qr)
        replayed = offline.decide(qr)
        passback = offline.decide(ticket.qr())
        expired = offline.decide(ticket.qr(at=1_700_000_000))
        wrong = offline.decide(make_ticket(lines=("2A",)).qr())
        garbage = offline.decide("CP1:%%%")

        assert (first.decision, first.action) == ("accept", "entry")
        assert [r.reason for r in (replayed, passback, expired, wrong, garbage)] == [
            "replayed",
            "already_inside",
            "qr_expired",
            "wrong_line",
            "malformed",
        ]
        assert len(offline.state.queue) == 6

    async def test_uploaded_decisions_are_reconciled_once(
        self, http: httpx.AsyncClient, servers: LocalServers
    ) -> None:
        gate = await provision_gate(http, station="3-06", direction="entry")
        offline = await offline_gate(http, gate)
        ticket = make_ticket()
        offline.decide(ticket.qr())
        offline.decide("CP1:not-a-code")

        first = await upload(http, gate, offline)
        again = await upload(http, gate, offline)

        assert (first["recorded"], first["duplicates"], first["conflicts"]) == (2, 0, 0)
        assert (again["recorded"], again["duplicates"]) == (0, 2)
        ids = {item["validation_id"] for item in offline.state.queue}
        found = await read_events(
            servers.kafka_bootstrap, "transit.validations", lambda e: e.id in ids, 2
        )
        assert {e.data["offline"] for e, _ in found} == {True}
        # The trip the offline gate opened is known online: entering again is passback.
        assert (await scan(http, gate, ticket.qr()))["reason"] == "already_inside"

    async def test_code_accepted_at_two_offline_gates_raises_an_alert(
        self, http: httpx.AsyncClient, servers: LocalServers
    ) -> None:
        north = await provision_gate(http, station="3-07", direction="entry")
        south = await provision_gate(http, station="3-07", direction="entry")
        north_offline = await offline_gate(http, north)
        south_offline = await offline_gate(http, south)
        ticket = make_ticket()
        shared_qr = ticket.qr()  # e.g. a screenshot passed to a friend

        assert north_offline.decide(shared_qr).decision == "accept"
        assert south_offline.decide(shared_qr).decision == "accept"
        first = await upload(http, north, north_offline)
        second = await upload(http, south, south_offline)

        assert (first["conflicts"], second["conflicts"]) == (0, 1)
        [(alert, key)] = await read_events(
            servers.kafka_bootstrap,
            "ops.alerts",
            lambda e: e.data.get("ticket_id") == ticket.id,
            1,
        )
        assert alert.type == "citypass.transit.validation.duplicate_use.v1"
        assert key == ticket.id.encode()
        assert {use["gate_id"] for use in alert.data["uses"]} == {north.gate_id, south.gate_id}

    async def test_offline_exit_is_charged_when_uploaded(
        self,
        http: httpx.AsyncClient,
        payments: httpx.AsyncClient,
        publisher: Publisher,
        validator: Validator,
    ) -> None:
        wallet = await open_wallet(payments)
        await top_up(payments, wallet, 20_000)
        ticket = await stored_value_ticket(publisher, validator, wallet)
        entry = await provision_gate(http, station="2A-02", direction="entry")
        exit_ = await provision_gate(http, station="2A-08", direction="exit")
        assert (await scan(http, entry, ticket.qr()))["decision"] == "accept"
        offline = await offline_gate(http, exit_)

        assert offline.decide(ticket.qr()).action == "exit"
        result = await upload(http, exit_, offline)

        fare = HANOI_FARES.trip_fare("2A-02", "2A-08")
        assert result["results"][0]["fare"] == fare
        await wait_until(
            lambda: balance_is(payments, wallet, 20_000 - fare), what="the offline exit fare"
        )
