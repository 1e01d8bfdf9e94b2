"""The operator's consumer through the real Kafka and Valkey: aggregates once per event,
malformed and unknown records dead-lettered, restarts, and alerts on ops.alerts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from citypass.servers import LocalServers
from services.operator.projection import Bucket, hanoi_day
from services.operator.repository import bucket_key, seen_key
from services.operator.tasks import EventSink
from services.parking import events as parking_events
from services.parking.occupancy import Count
from services.parking.tariffs import VehicleType
from services.payments import events as payments_events
from services.payments.repository.balances import Leg
from services.payments.repository.journal import TransferDraft
from services.validation import events as validation_events
from shared.events import ALERT_ACKNOWLEDGED, ALERT_RAISED, Event
from shared.kafka import DEAD_LETTER_TOPIC, Publisher
from tests.operator.conftest import (
    Console,
    caught_up,
    eventually,
    operator_settings_for,
    running_console,
    validation_event,
)

VALIDATIONS = "transit.validations"


@pytest.fixture(scope="module", autouse=True)
async def settled(console: Console, servers: LocalServers) -> None:
    """The console has read what earlier test modules published on this worker's Kafka, so
    every change a test sees comes from its own events."""
    await eventually(
        lambda: caught_up(servers.kafka_bootstrap, console.settings.consumer_group), timeout_s=90
    )


async def today(redis: Redis, name: str) -> int:
    return int(await redis.hget(bucket_key(Bucket.day, hanoi_day(time.time())), name) or 0)


async def read_topic(
    bootstrap: str,
    topic: str,
    wanted: Callable[[ConsumerRecord], bool],
    timeout_s: float = 30,
    count: int = 1,
) -> list[ConsumerRecord]:
    """Records of `topic` from the beginning, until `count` of them satisfy `wanted`."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and sum(map(wanted, found)) < count:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found += records
    finally:
        await consumer.stop()
    return [r for r in found if wanted(r)]


def header(record: ConsumerRecord, name: str) -> str | None:
    return next((v.decode() for k, v in record.headers or () if k == name), None)


def transfer(kind: str, amount: int, source: str | None, lot_id: str | None = None) -> Event:
    draft = TransferDraft(
        id=uuid.uuid4(),
        kind=kind,
        amount=amount,
        debit=Leg(uuid.uuid4(), ("rider_wallet",)),
        credit=Leg(uuid.uuid4(), ("transit_revenue",)),
        wallet_account_id=uuid.uuid4(),
        source=source,
        lot_id=lot_id,
    )
    return payments_events.transfer_posted(draft)


class TestAggregates:
    async def test_a_validation_counts_once_at_its_station_and_gate(
        self, console: Console, operator_redis: Redis, publisher: Publisher
    ) -> None:
        async def station() -> dict[str, Any]:
            board = (await console.http.get("/v1/dashboard", headers=console.viewer)).json()
            found: dict[str, Any] = next(s for s in board["stations"] if s["place"] == "2A-07")
            return found

        before = await station()
        event = validation_event(station="2A-07", gate_id="2A-07-EN")
        await publisher.publish(VALIDATIONS, str(event.data["ticket_id"]), event)
        await publisher.publish(VALIDATIONS, str(event.data["ticket_id"]), event)  # redelivered
        marker = validation_event(station="2A-06", gate_id="2A-06-EN")
        await publisher.publish(VALIDATIONS, str(event.data["ticket_id"]), marker)  # after both

        await eventually(lambda: _applied(operator_redis, marker.id))
        after = await station()
        assert after["name"] == "Phùng Khoang"
        assert after["today"]["accepted"] == before["today"]["accepted"] + 1
        assert after["today"]["rejected"] == before["today"]["rejected"]
        assert sum(m["accepted"] for m in after["per_minute"]) == 1 + sum(
            m["accepted"] for m in before["per_minute"]
        )
        board = (await console.http.get("/v1/dashboard", headers=console.viewer)).json()
        gate = next(g for g in board["gates"] if g["gate_id"] == "2A-07-EN")
        assert gate["online"] is True

    async def test_rejections_count_by_reason(
        self, console: Console, operator_redis: Redis, publisher: Publisher
    ) -> None:
        expired = await today(operator_redis, "r|qr_expired")
        wrong_line = await today(operator_redis, "r|wrong_line")
        rejected = await today(operator_redis, "v|3-02|rejected")
        events = [
            validation_event(station="3-02", gate_id="3-02-EN", accepted=False, reason=reason)
            for reason in ("qr_expired", "qr_expired", "wrong_line")
        ]
        for event in events:
            # One key: one partition, so the last event is applied after the others.
            await publisher.publish(VALIDATIONS, "3-02-EN", event)

        await eventually(lambda: _applied(operator_redis, events[-1].id))
        board = (await console.http.get("/v1/dashboard", headers=console.viewer)).json()
        reasons = {r["reason"]: r for r in board["reasons"]}
        assert reasons["qr_expired"]["today"] == expired + 2
        assert reasons["wrong_line"]["today"] == wrong_line + 1
        assert sum(reasons["wrong_line"]["counts"]) >= 1
        station = next(s for s in board["stations"] if s["place"] == "3-02")
        assert station["today"]["rejected"] == rejected + 3

    async def test_revenue_today_by_source_net_of_refunds(
        self, console: Console, operator_redis: Redis, publisher: Publisher
    ) -> None:
        lot = f"L-{uuid.uuid4().hex[:6]}"
        before = (await console.http.get("/v1/dashboard", headers=console.viewer)).json()["today"]
        transfers = [
            transfer("charge", 12_000, "transit"),
            transfer("refund", 2_000, "transit"),
            transfer("capture", 25_000, "parking", lot_id=lot),
            transfer("hold", 40_000, "parking", lot_id=lot),
            transfer("topup", 100_000, None),
        ]
        for event in transfers:
            await publisher.publish("payments.ledger", lot, event)  # one partition, in order

        await eventually(lambda: _applied(operator_redis, transfers[-1].id))
        after = (await console.http.get("/v1/dashboard", headers=console.viewer)).json()["today"]
        assert after["revenue_transit"] - before["revenue_transit"] == 10_000
        assert after["revenue_parking"] - before["revenue_parking"] == 25_000
        assert after["revenue_by_lot"][lot] == 25_000
        assert after["topups"] - before["topups"] == 100_000

    async def test_occupancy_keeps_the_highest_sequence(
        self, console: Console, operator_redis: Redis, publisher: Publisher
    ) -> None:
        lot = f"T-{uuid.uuid4().hex[:6]}"
        newer = parking_events.occupancy_changed(
            lot,
            VehicleType.CAR,
            Count(True, 38, 40, 9),
            change=1,
            session_id=uuid.uuid4(),
            at=datetime.now(UTC),
        )
        older = parking_events.occupancy_changed(
            lot,
            VehicleType.CAR,
            Count(True, 37, 40, 8),
            change=1,
            session_id=uuid.uuid4(),
            at=datetime.now(UTC),
        )
        await publisher.publish("parking.occupancy", lot, newer)
        await publisher.publish("parking.occupancy", lot, older)

        async def lot_row() -> dict[str, Any] | None:
            board = (await console.http.get("/v1/dashboard", headers=console.viewer)).json()
            return next((x for x in board["lots"] if x["lot_id"] == lot), None)

        await eventually(lot_row)
        await eventually(
            lambda: today(operator_redis, "never") if False else _applied(operator_redis, older.id)
        )
        assert (await lot_row()) == {
            "lot_id": lot,
            "vehicle_type": "car",
            "occupied": 38,
            "capacity": 40,
            "free": 2,
            "updated_at": (await lot_row() or {})["updated_at"],
            "name": None,  # parking's list of lots is not read in this module
            "provisioned": False,
        }


async def _applied(redis: Redis, event_id: str) -> bool:
    return bool(await redis.exists(seen_key(event_id)))


class TestDeadLetters:
    async def test_garbage_and_unknown_events_are_parked_and_the_next_event_is_processed(
        self, console: Console, operator_redis: Redis, publisher: Publisher, servers: LocalServers
    ) -> None:
        group = console.settings.consumer_group
        marker = uuid.uuid4().hex
        producer = AIOKafkaProducer(bootstrap_servers=servers.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(VALIDATIONS, f"garbage {marker}".encode(), key=b"x")
        finally:
            await producer.stop()
        unknown = Event(
            type="citypass.transit.validation.teleported.v1",
            source="/citypass/validation",
            subject=marker,
            data={"gate_id": "2A-01-EN", "marker": marker},
        )
        await publisher.publish(VALIDATIONS, marker, unknown)
        good = validation_event(station="2A-11", gate_id="2A-11-EN")
        await publisher.publish(VALIDATIONS, str(good.data["ticket_id"]), good)

        await eventually(lambda: _applied(operator_redis, good.id))
        # The three records went to different partitions: the good one applied says nothing
        # of the other two, so wait for both to be parked.
        parked = await read_topic(
            servers.kafka_bootstrap,
            DEAD_LETTER_TOPIC,
            lambda r: header(r, "dlq_group") == group and marker.encode() in (r.value or b""),
            timeout_s=30,
            count=2,
        )
        reasons = sorted((header(r, "dlq_reason") or "").split(":")[0] for r in parked)
        assert reasons == ["missing_attribute", "unknown_type"]
        assert all(header(r, "dlq_topic") == VALIDATIONS for r in parked)
        for reason in ("missing_attribute", "unknown_type"):
            counted = REGISTRY.get_sample_value(
                "citypass_consumer_dead_letters_total",
                {"group": group, "topic": VALIDATIONS, "reason": reason},
            )
            assert counted is not None
            assert counted >= 1


class TestAlertsThroughKafka:
    async def test_a_replay_burst_is_published_shown_and_acknowledged(
        self, console: Console, publisher: Publisher, servers: LocalServers
    ) -> None:
        gate = f"2A-12-{uuid.uuid4().hex[:4].upper()}"
        for _ in range(console.settings.replay_burst_count):
            event = validation_event(
                station="2A-12", gate_id=gate, accepted=False, reason="replayed"
            )
            await publisher.publish(VALIDATIONS, str(event.data["ticket_id"]), event)

        published = await read_topic(
            servers.kafka_bootstrap,
            "ops.alerts",
            lambda r: header(r, "ce_type") == ALERT_RAISED and header(r, "ce_subject") == gate,
        )
        assert len(published) == 1
        alert_id = header(published[0], "ce_id")
        assert alert_id is not None

        async def shown() -> list[dict[str, Any]]:
            alerts = (await console.http.get("/v1/alerts", headers=console.viewer)).json()
            return [a for a in alerts if a["alert_id"] == alert_id]

        [alert] = await eventually(shown)
        assert alert["rule"] == "replay_burst"
        assert alert["gate_id"] == gate
        assert alert["params"]["count"] == console.settings.replay_burst_count

        refused = await console.http.post(f"/v1/alerts/{alert_id}/ack", headers=console.viewer)
        assert refused.status_code == 403
        acked = await console.http.post(f"/v1/alerts/{alert_id}/ack", headers=console.admin)
        assert acked.status_code == 200
        assert acked.json()["acknowledged_by"] == "admin"
        audit = await read_topic(
            servers.kafka_bootstrap,
            "ops.alerts",
            lambda r: (
                header(r, "ce_type") == ALERT_ACKNOWLEDGED and alert_id.encode() in (r.value or b"")
            ),
        )
        assert len(audit) == 1
        open_alerts = (
            await console.http.get("/v1/alerts?status=open", headers=console.viewer)
        ).json()
        assert alert_id not in {a["alert_id"] for a in open_alerts}

    async def test_other_services_alerts_are_shown(
        self, console: Console, publisher: Publisher
    ) -> None:
        ticket = str(uuid.uuid4())
        double_use = validation_events.duplicate_use(
            ticket_id=ticket,
            qr_at=int(time.time()) - 30,
            counter=3,
            uses=[
                {"gate_id": "2A-01-EN", "validation_id": str(uuid.uuid4())},
                {"gate_id": "2A-02-EN", "validation_id": str(uuid.uuid4())},
            ],
            detail="One dynamic QR was accepted at 2 gates.",
        )
        suspense = payments_events.notification_unmatched(
            bank_transaction_id=f"FT{uuid.uuid4().hex[:10]}",
            cause="unknown_reference",
            amount=50_000,
            reference="CP123",
            expected_amount=None,
            payment_request_id=None,
            suspense_transfer_id=uuid.uuid4(),
            detail="No payment request has reference CP123.",
        )
        await publisher.publish("ops.alerts", ticket, double_use)
        await publisher.publish("ops.alerts", suspense.subject, suspense)

        async def shown() -> dict[str, dict[str, Any]]:
            alerts = (await console.http.get("/v1/alerts", headers=console.viewer)).json()
            found = {
                a["alert_id"]: a for a in alerts if a["alert_id"] in (double_use.id, suspense.id)
            }
            return found if len(found) == 2 else {}

        found = await eventually(shown)
        assert found[double_use.id]["rule"] == "offline_double_use"
        assert found[double_use.id]["params"]["gates"] == ["2A-01-EN", "2A-02-EN"]
        assert found[suspense.id]["rule"] == "suspense"
        assert found[suspense.id]["params"]["amount"] == 50_000

    async def test_a_silent_gate_raises_one_alert(
        self, console: Console, publisher: Publisher
    ) -> None:
        gate = f"3-08-{uuid.uuid4().hex[:4].upper()}"
        event = validation_event(station="3-08", gate_id=gate)
        await publisher.publish(VALIDATIONS, str(event.data["ticket_id"]), event)
        sink: EventSink = console.app.state.sink

        async def seen() -> bool:
            board = (await console.http.get("/v1/dashboard", headers=console.viewer)).json()
            return any(g["gate_id"] == gate for g in board["gates"])

        await eventually(seen)
        later = time.time() + console.settings.gate_silent_after.total_seconds() + 60
        raised = [a for a in await sink.check_gates(later) if a.gate_id == gate]
        again = [a for a in await sink.check_gates(later + 60) if a.gate_id == gate]
        assert [a.rule.value for a in raised] == ["gate_silent"]
        assert again == []


class TestRestart:
    async def test_a_new_process_reads_on_from_the_committed_offsets_and_counts_nothing_twice(
        self,
        console: Console,
        servers: LocalServers,
        operator_redis: Redis,
        publisher: Publisher,
    ) -> None:
        station = "3-05"
        start = await today(operator_redis, f"v|{station}|accepted")
        for _ in range(3):
            event = validation_event(station=station, gate_id="3-05-EN")
            await publisher.publish(VALIDATIONS, str(event.data["ticket_id"]), event)
        await eventually(lambda: _count_is(operator_redis, station, start + 3))
        before = (await console.http.get("/v1/dashboard", headers=console.viewer)).json()

        # What a restarted process resumes from: the group's offsets are committed up to
        # everything it applied (an offset is committed just after its record is applied).
        await eventually(
            lambda: caught_up(servers.kafka_bootstrap, console.settings.consumer_group),
            timeout_s=20,
        )

        # A process whose group lost its offsets (a broker restart) re-reads every retained
        # record: the aggregates it finds in Valkey are not counted again, new events are.
        later = validation_event(station=station, gate_id="3-05-EN")
        await publisher.publish(VALIDATIONS, str(later.data["ticket_id"]), later)
        reread = operator_settings_for(servers)
        async with running_console(reread) as restarted:
            shown = (await restarted.http.get("/v1/dashboard", headers=restarted.viewer)).json()
            assert shown["today"]["accepted"] >= before["today"]["accepted"]
            await eventually(
                lambda: caught_up(servers.kafka_bootstrap, reread.consumer_group), timeout_s=20
            )
        assert await today(operator_redis, f"v|{station}|accepted") == start + 4


async def _count_is(redis: Redis, station: str, expected: int) -> bool:
    return await today(redis, f"v|{station}|accepted") == expected
