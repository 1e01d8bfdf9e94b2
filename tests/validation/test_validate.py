"""The gate decision, end to end on real Redis and Kafka: every reason a gate can give."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from citypass.servers import LocalServers
from services.validation import repository
from services.validation.app import build_app
from services.validation.service import Validator
from services.validation.tasks import Workers
from shared.events import Event
from shared.kafka import Publisher
from shared.qrimage import decode_png, render_png
from shared.ticketcodec import public_key_bytes
from tests.conftest import AppClient
from tests.operator.conftest import serve
from tests.support import committed_past, read_events, wait_until
from tests.validation.conftest import (
    ADMIN,
    ISSUER_KID,
    PublishedVersions,
    b64,
    device_fingerprint,
    hanoi_zip,
    issuer_config,
    make_ticket,
    provision_gate,
    scan,
    ticket_issued,
    validation_settings,
)


class TestAccept:
    async def test_fresh_qr_scanned_from_its_png_is_accepted(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-01", direction="entry")
        ticket = make_ticket()
        [text] = decode_png(render_png(ticket.qr()))

        decided = await scan(http, gate, text)

        assert decided["decision"] == "accept", decided
        assert decided["reason"] == "ok"
        assert decided["action"] == "entry"
        assert decided["ticket_id"] == ticket.id
        assert uuid.UUID(decided["validation_id"]).version == 7
        assert decided["message_vi"].startswith("Mời qua")
        assert decided["message_en"].startswith("Welcome")

    async def test_same_qr_again_is_replayed(self, http: httpx.AsyncClient) -> None:
        entry = await provision_gate(http, station="2A-02", direction="entry")
        other = await provision_gate(http, station="2A-02", direction="exit")
        qr = make_ticket().qr()

        first = await scan(http, entry, qr)
        again = await scan(http, other, qr)

        assert first["decision"] == "accept"
        assert (again["decision"], again["reason"]) == ("reject", "replayed")
        assert again["message_en"] == "QR code already used"

    async def test_qr_older_than_the_window_is_expired(
        self, http: httpx.AsyncClient, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="2A-03")
        ticket = make_ticket()
        stale = ticket.qr(at=int(time.time()) - validator.tolerances.qr_window_s - 1)
        ahead = ticket.qr(at=int(time.time()) + validator.tolerances.qr_skew_s + 30)

        assert (await scan(http, gate, stale))["reason"] == "qr_expired"
        assert (await scan(http, gate, ahead))["reason"] == "qr_not_yet_valid"
        # A code refused before the replay step is not consumed: the rider's next code works.
        assert (await scan(http, gate, ticket.qr()))["decision"] == "accept"


class TestDenyList:
    async def test_ticket_revoked_on_kafka_is_rejected(
        self, http: httpx.AsyncClient, publisher: Publisher, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="3-01")
        ticket = make_ticket()
        assert (await scan(http, gate, ticket.qr()))["decision"] == "accept"

        await publisher.publish(
            "transit.tickets",
            ticket.id,
            Event(
                type="citypass.transit.ticket.revoked.v1",
                source="/citypass/ticketing",
                subject=ticket.id,
                data={"ticket_id": ticket.id, "reason": "refunded"},
            ),
        )
        await wait_until(lambda: ticket.id in validator.memory.deny_tickets, what="revocation")

        decided = await scan(http, gate, ticket.qr())
        assert (decided["decision"], decided["reason"]) == ("reject", "revoked_ticket")

    async def test_device_revoked_on_kafka_is_rejected(
        self, http: httpx.AsyncClient, publisher: Publisher, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="3-02", direction="entry")
        ticket = make_ticket()
        fingerprint = device_fingerprint(ticket)
        event = Event(
            type="citypass.transit.device.revoked.v1",
            source="/citypass/ticketing",
            subject=fingerprint,
            data={"device_key_fingerprint": fingerprint},
        )
        await publisher.publish("transit.tickets", fingerprint, event)
        await wait_until(lambda: fingerprint in validator.memory.deny_devices, what="revocation")

        assert (await scan(http, gate, ticket.qr()))["reason"] == "revoked_device"

    async def test_an_ended_revocation_is_dropped_from_the_deny_list(
        self, http: httpx.AsyncClient, publisher: Publisher, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="3-03", direction="entry")
        ticket = make_ticket()
        fingerprint = device_fingerprint(ticket)
        deny_until = int(time.time()) + 3
        event = Event(
            type="citypass.transit.device.revoked.v1",
            source="/citypass/ticketing",
            subject=fingerprint,
            data={
                "device_key_fingerprint": fingerprint,
                "deny_until": datetime.fromtimestamp(deny_until, UTC).isoformat(),
            },
        )
        await publisher.publish("transit.tickets", fingerprint, event)
        await wait_until(lambda: fingerprint in validator.memory.deny_devices, what="revocation")
        assert (await scan(http, gate, ticket.qr()))["reason"] == "revoked_device"

        assert await repository.drop_expired_deny(validator.redis, deny_until) == 0  # not yet
        assert await repository.drop_expired_deny(validator.redis, deny_until + 1) >= 1
        await wait_until(
            lambda: fingerprint not in validator.memory.deny_devices, what="the state refresh"
        )
        assert (await scan(http, gate, ticket.qr()))["decision"] == "accept"


class TestTrips:
    async def test_entering_twice_is_already_inside(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-04", direction="entry")
        ticket = make_ticket()

        assert (await scan(http, gate, ticket.qr()))["decision"] == "accept"
        again = await scan(http, gate, ticket.qr())

        assert (again["decision"], again["reason"]) == ("reject", "already_inside")

    async def test_exit_without_entry_is_not_inside(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-05", direction="exit")

        decided = await scan(http, gate, make_ticket().qr())

        assert (decided["decision"], decided["reason"]) == ("reject", "not_inside")

    async def test_both_way_gate_enters_then_exits(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="2A-06", direction="both")
        ticket = make_ticket()

        actions = [(await scan(http, gate, ticket.qr()))["action"] for _ in range(3)]

        assert actions == ["entry", "exit", "entry"]

    async def test_single_ride_is_consumed_once(
        self, http: httpx.AsyncClient, publisher: Publisher, validator: Validator
    ) -> None:
        entry = await provision_gate(http, station="2A-07", direction="entry")
        exit_ = await provision_gate(http, station="2A-09", direction="exit")
        ticket = make_ticket(product="METRO-1RIDE")
        await publisher.publish(
            "transit.tickets", ticket.id, ticket_issued(ticket, kind="single", rides=1)
        )
        await wait_until(lambda: "METRO-1RIDE" in validator.memory.products, what="ticket event")

        entered = await scan(http, entry, ticket.qr())
        exited = await scan(http, exit_, ticket.qr())
        again = await scan(http, entry, ticket.qr())

        assert (entered["decision"], entered["remaining_rides"]) == ("accept", 0)
        assert exited["decision"] == "accept"
        assert (again["decision"], again["reason"]) == ("reject", "no_rides_left")

    async def test_bus_boarding_twice_on_one_route_is_passback(
        self, http: httpx.AsyncClient
    ) -> None:
        validator_09 = await provision_gate(http, route="09")
        ticket = make_ticket(product="BUS-MONTH-ALL")

        first = await scan(http, validator_09, ticket.qr())
        second = await scan(http, validator_09, ticket.qr())

        assert (first["decision"], first["action"]) == ("accept", "tap")
        assert second["reason"] == "already_inside"


class TestProductRules:
    async def test_ticket_for_another_line_is_wrong_line(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="3-03")

        decided = await scan(http, gate, make_ticket(lines=("2A",)).qr())

        assert decided["reason"] == "wrong_line"

    async def test_ticket_outside_its_validity(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="3-04")
        now = int(time.time())
        expired = make_ticket(valid_from=now - 40 * 86_400, valid_until=now - 86_400)
        future = make_ticket(valid_from=now + 86_400, valid_until=now + 2 * 86_400)

        assert (await scan(http, gate, expired.qr()))["reason"] == "ticket_expired"
        assert (await scan(http, gate, future.qr()))["reason"] == "ticket_not_yet_valid"

    async def test_gate_restricted_to_other_products(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, route="86", products=["BUS-86"])

        decided = await scan(http, gate, make_ticket(product="METRO-DAY").qr())

        assert decided["reason"] == "gate_not_allowed"


class TestSignatures:
    async def test_unknown_issuer_key(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="3-05")
        ticket = make_ticket(kid="nokey", issuer=Ed25519PrivateKey.generate())

        decided = await scan(http, gate, ticket.qr())

        assert (decided["reason"], decided["reason_detail"]) == ("unknown_key", "unknown_key")

    async def test_credential_signed_by_another_key(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="3-06")
        forged = make_ticket(issuer=Ed25519PrivateKey.generate())

        assert (await scan(http, gate, forged.qr()))["reason"] == "bad_issuer_signature"

    async def test_qr_whose_device_signature_was_altered(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="3-07")

        decided = await scan(http, gate, _flip_device_signature(make_ticket().qr()))

        assert decided["reason"] == "bad_device_signature"

    async def test_issuer_keys_follow_ticketing_rotations_on_kafka(
        self, http: httpx.AsyncClient, publisher: Publisher, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="3-08", direction="both")
        issuer = Ed25519PrivateKey.generate()
        kid = f"r{uuid.uuid4().hex[:4]}"
        ticket = make_ticket(kid=kid, issuer=issuer)

        def key_set(status: str) -> Event:
            key = {"kid": kid, "public_key": b64(public_key_bytes(issuer)), "status": status}
            return Event(
                type="citypass.transit.issuer_keys.changed.v1",
                source="/citypass/ticketing",
                subject="issuer-keys",
                data={"keys": [{**key, "algorithm": "Ed25519", "not_after": None}]},
            )

        await publisher.publish("transit.tickets", "issuer-keys", key_set("active"))
        await wait_until(lambda: kid in validator.memory.usable_keys, what="the new key")
        assert (await scan(http, gate, ticket.qr()))["decision"] == "accept"

        await publisher.publish("transit.tickets", "issuer-keys", key_set("retired"))
        await wait_until(lambda: kid not in validator.memory.usable_keys, what="the retirement")
        assert (await scan(http, gate, ticket.qr()))["reason"] == "unknown_key"

    async def test_an_older_key_set_redelivered_late_does_not_drop_the_current_key(
        self, http: httpx.AsyncClient, publisher: Publisher, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="3-08")
        issuer = Ed25519PrivateKey.generate()
        kid = f"n{uuid.uuid4().hex[:4]}"
        ticket = make_ticket(kid=kid, issuer=issuer)
        key = {"kid": kid, "public_key": b64(public_key_bytes(issuer)), "status": "active"}
        key_set = {"keys": [{**key, "algorithm": "Ed25519", "not_after": None}]}
        now = datetime.now(UTC)
        before_it = Event(
            type="citypass.transit.issuer_keys.changed.v1",
            source="/citypass/ticketing",
            subject="issuer-keys",
            data={"keys": []},  # a set from before the new key existed
            time=now - timedelta(minutes=5),
        )
        with_it = Event(
            type="citypass.transit.issuer_keys.changed.v1",
            source="/citypass/ticketing",
            subject="issuer-keys",
            data=key_set,
            time=now,
        )

        await publisher.publish("transit.tickets", "issuer-keys", with_it)
        await wait_until(lambda: kid in validator.memory.usable_keys, what="the new key")
        await publisher.publish("transit.tickets", "issuer-keys", before_it)  # at least once
        probe = make_ticket()  # behind it on its partition: once applied, so is the old set
        await publisher.publish("transit.tickets", "issuer-keys", ticket_issued(probe))

        async def probe_applied() -> bool:
            return bool(await validator.redis.exists(repository.ticket_key(probe.id)))

        await wait_until(probe_applied, what="the events after it")

        assert kid in validator.memory.usable_keys
        assert (await scan(http, gate, ticket.qr()))["decision"] == "accept"

    async def test_a_key_change_event_makes_it_ask_ticketing_and_not_trust_the_event(
        self, app_client: AppClient, publisher: Publisher, tmp_path: Path
    ) -> None:
        def key_of(kid: str, issuer: Ed25519PrivateKey) -> dict[str, object]:
            raw = b64(public_key_bytes(issuer))
            return {"kid": kid, "public_key": raw, "status": "active", "algorithm": "Ed25519"}

        issuer = Ed25519PrivateKey.generate()
        kid, stranger = f"t{uuid.uuid4().hex[:4]}", f"s{uuid.uuid4().hex[:4]}"
        published: dict[str, list[dict[str, object]]] = {"keys": []}  # ticketing's GET /v1/keys
        asked: list[float] = []

        async def keys() -> dict[str, list[dict[str, object]]]:
            answer = {"keys": list(published["keys"])}  # the set as it is when asked
            asked.append(time.monotonic())
            return answer

        ticketing = FastAPI()
        ticketing.add_api_route("/v1/keys", keys)
        network = PublishedVersions()
        network.publish(datetime.fromtimestamp(0, UTC), hanoi_zip())
        network.route(ticketing)
        async with serve(ticketing) as ticketing_url:
            settings = validation_settings(
                tmp_path, ticketing_url=ticketing_url, keys_refresh=timedelta(hours=1)
            )
            app = build_app(settings)
            validator: Validator = app.state.validator
            async with app_client(app) as gates:
                gate = await provision_gate(gates, station="3-08")
                await wait_until(lambda: asked, what="the poll at start")  # next: in an hour
                published["keys"] = [key_of(kid, issuer)]  # ticketing rotates to a new key
                # The newest event by time, carrying a set that is not ticketing's (a replay
                # of another deployment's, a bug): the gate asks ticketing instead.
                odd = Event(
                    type="citypass.transit.issuer_keys.changed.v1",
                    source="/citypass/ticketing",
                    subject="issuer-keys",
                    data={"keys": [key_of(stranger, Ed25519PrivateKey.generate())]},
                )
                producer = await publisher.connect()
                sent = await producer.send_and_wait(
                    "transit.tickets", odd.value(), key=b"issuer-keys", headers=odd.headers()
                )
                # Its new consumer group reads transit.tickets from the start: give it time.
                # Earlier key events on the partition make it poll too, so the new key alone
                # does not say the odd event was handled: its offset committed does.
                await wait_until(
                    lambda: kid in validator.memory.usable_keys, timeout_s=120, what="the new key"
                )
                group = f"validation-deny-{settings.instance_id}"
                await wait_until(
                    lambda: committed_past(settings.kafka_bootstrap_servers, group, sent),
                    timeout_s=60,
                    what="the odd event handled",
                )

                assert stranger not in validator.memory.usable_keys
                ticket = make_ticket(kid=kid, issuer=issuer)
                assert (await scan(gates, gate, ticket.qr()))["decision"] == "accept"

    async def test_a_replica_configured_with_other_keys_leaves_ours_alone(
        self, http: httpx.AsyncClient, validator: Validator, tmp_path: Path
    ) -> None:
        gate = await provision_gate(http, station="3-08")
        other_kid = f"x{uuid.uuid4().hex[:4]}"
        other = build_app(
            validation_settings(
                tmp_path, issuer_keys=[issuer_config(other_kid, Ed25519PrivateKey.generate())]
            )
        )
        other_workers: Workers = other.state.workers

        await other_workers.load_configured_keys()  # what its start-up does, on the same Redis
        seen = validator.memory.version
        await repository.bump_state(validator.redis)
        await wait_until(lambda: validator.memory.version != seen, what="the state refresh")

        assert ISSUER_KID in validator.memory.usable_keys
        assert other_kid not in validator.memory.usable_keys
        assert (await scan(http, gate, make_ticket().qr()))["decision"] == "accept"

    async def test_operator_loaded_issuer_key_is_accepted(self, http: httpx.AsyncClient) -> None:
        gate = await provision_gate(http, station="3-08")
        issuer = Ed25519PrivateKey.generate()
        kid = f"op{uuid.uuid4().hex[:4]}"
        loaded = await http.put(
            f"/v1/issuer-keys/{kid}",
            json={"public_key": b64(public_key_bytes(issuer))},
            headers=ADMIN,
        )
        assert loaded.status_code == 200, loaded.text

        decided = await scan(http, gate, make_ticket(kid=kid, issuer=issuer).qr())

        assert decided["decision"] == "accept"


def _flip_device_signature(text: str) -> str:
    """The same code with the last byte of the device signature flipped."""
    import base45
    import cbor2

    envelope = cbor2.loads(base45.b45decode(text[4:]))
    signature = bytearray(envelope[4])
    signature[-1] ^= 0x01
    envelope[4] = bytes(signature)
    encoded: bytes = base45.b45encode(cbor2.dumps(envelope))
    return "CP1:" + encoded.decode()


class TestEvents:
    async def test_every_decision_is_published_keyed_by_ticket(
        self, http: httpx.AsyncClient, servers: LocalServers
    ) -> None:
        gate = await provision_gate(http, station="2A-10", direction="entry")
        ticket = make_ticket()
        accepted = await scan(http, gate, ticket.qr())
        rejected = await scan(http, gate, ticket.qr())
        ids = {accepted["validation_id"], rejected["validation_id"]}

        found = await read_events(
            servers.kafka_bootstrap, "transit.validations", lambda e: e.id in ids, 2
        )

        types = {event.id: (event.type, key) for event, key in found}
        assert types[accepted["validation_id"]] == (
            "citypass.transit.validation.accepted.v1",
            ticket.id.encode(),
        )
        assert types[rejected["validation_id"]] == (
            "citypass.transit.validation.rejected.v1",
            ticket.id.encode(),
        )
