"""The operator dashboard in a real headless Chromium (Debian's `chromium`, driven over the
DevTools protocol on a pipe, see cdp.py): sign in, check what the page counts, watch a real
gate validation appear.

Gates are provisioned on the real validation app and lots on the real parking service (the
console reads both lists); a morning of traffic is published (in the producers' own event
shapes) in which some gates never report, some went silent, and two of the four lots have no
occupancy events. The page must show every figure as what was sent counts it: each station's
accepted and rejected validations this minute and today, every provisioned gate in its state
(online, silent, never reported, disabled) and the gate totals, every lot. Then a gate
validates a real signed dynamic QR on the real validation app (`POST /v1/validations`,
gate-signed), and the validation must be in the live tail and in its station's counter within
2 s. The page is saved as test-artifacts/operator-dashboard.png.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from citypass.servers import LocalServers, free_port
from services.operator.projection import HANOI, TOPICS, hanoi_day, parse_time
from services.operator.repository import seen_key
from services.parking import events as parking_events
from services.parking.occupancy import Count
from services.parking.tariffs import VehicleType
from services.payments import events as payments_events
from services.payments.repository.balances import Leg
from services.payments.repository.journal import TransferDraft
from services.ticketing import events as ticketing_events
from services.validation.app import build_app as build_validation_app
from services.validation.settings import IssuerKeyConfig, ValidationSettings
from shared.devicesigning import DeviceSigner
from shared.events import (
    OCCUPANCY_CHANGED,
    SESSION_OPENED,
    TICKET_ISSUED,
    TICKETS_TOPIC,
    VALIDATION_ACCEPTED,
    VALIDATION_REJECTED,
    Event,
)
from shared.fares.feed import HANOI as HANOI_FEED
from shared.fares.feed import read_feed
from shared.fares.lines import NetworkMap
from shared.kafka import Publisher, ensure_topics
from shared.ticketcodec import (
    Credential,
    RiderCategory,
    make_dynamic_qr,
    public_key_bytes,
    sign_credential,
)
from tests.cdp import INSTALL_HINT, Browser, chromium_path
from tests.operator.conftest import (
    ADMIN_PASSWORD,
    BROWSER_VALIDATION_REDIS_DB,
    Console,
    eventually,
    operator_settings_for,
    running_console,
    serve,
    validation_event,
)
from tests.support import running_service

LINES = NetworkMap.of(read_feed(HANOI_FEED)).lines
VALIDATION_ADMIN = "browser-test-validation-admin-token"
PARKING_ADMIN = "browser-test-parking-admin-token"
RUN = uuid.uuid4().hex[:4].upper()
# The test's own lots (the parking database is shared with the parking tests): lot → places
# per vehicle type. Occupancy events are sent for the first two only.
LOTS = {
    f"HK01-{RUN}": {"motorbike": 300, "car": 40},
    f"BD01-{RUN}": {"motorbike": 200, "car": 120},
    f"HK02-{RUN}": {"motorbike": 500, "car": 0},
    f"BD02-{RUN}": {"motorbike": 400, "car": 60},
}
QUIET_GATES = ("2A-03-EN-2", "3-05-EX-2")  # provisioned, never report
DISABLED_GATE = "2A-06-EX-2"
ISSUER_KID = "op1"
ISSUER = Ed25519PrivateKey.generate()
STATION = "2A-05"  # Thượng Đình
WIDTH, HEIGHT = 1600, 1000


@pytest.fixture(scope="module")
async def own_kafka(
    servers: LocalServers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LocalServers]:
    """A broker of this module's own (PostgreSQL and Valkey are shared): the page must count
    exactly what this test sent, and other tests' validation events (relayed late, or again:
    delivery is at least once) would land on its stations' counters on a shared broker."""
    own = LocalServers(
        tmp_path_factory.mktemp("dashboard-kafka"),
        servers.postgres_port,
        servers.redis_port,
        free_port(),
    )
    own.start_kafka()
    await ensure_topics(own.kafka_bootstrap)
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture(scope="module")
async def publisher(own_kafka: LocalServers) -> AsyncIterator[Publisher]:
    kafka = Publisher(own_kafka.kafka_bootstrap)
    try:
        yield kafka
    finally:
        await kafka.close()


@pytest.fixture(scope="module")
async def validation(own_kafka: LocalServers) -> AsyncIterator[str]:
    """The real validation service, with the issuer key this test signs credentials with."""
    settings = ValidationSettings(
        environment="test",
        redis_url=f"redis://127.0.0.1:{own_kafka.redis_port}/{BROWSER_VALIDATION_REDIS_DB}",
        kafka_bootstrap_servers=own_kafka.kafka_bootstrap,
        admin_token=VALIDATION_ADMIN,
        issuer_keys=[
            IssuerKeyConfig(
                kid=ISSUER_KID, public_key=base64.b64encode(public_key_bytes(ISSUER)).decode()
            )
        ],
        ticketing_url=None,
        network_feed=HANOI_FEED,
        instance_id=f"browser-{uuid.uuid4().hex[:10]}",
        # Its fare worker would join the validation tests' consumer group and take their events.
        run_fare_worker=False,
    )
    async with serve(build_validation_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def parking(
    migrated: LocalServers, own_kafka: LocalServers, service_env: dict[str, str]
) -> Iterator[str]:
    """The real parking service (a process): the console reads its list of lots."""
    env = {
        **service_env,
        "PARKING_KAFKA_BOOTSTRAP_SERVERS": own_kafka.kafka_bootstrap,
        "PARKING_ADMIN_TOKEN": PARKING_ADMIN,
        "PARKING_LOG_LEVEL": "WARNING",
    }
    with running_service("parking", env, migrated.log_dir / "operator-browser-parking.log") as p:
        yield p.url


@pytest.fixture(scope="module")
async def console(
    own_kafka: LocalServers, operator_redis: Redis, validation: str, parking: str
) -> AsyncIterator[Console]:
    group = f"operator-browser-{uuid.uuid4().hex[:6]}"
    settings = operator_settings_for(
        own_kafka,
        consumer_group=group,
        lag_groups={group: list(TOPICS)},  # the only group on this module's own broker
        metrics_urls={"validation": f"{validation}/metrics"},
        gates_url=f"{validation}/v1/gates",
        lots_url=f"{parking}/v1/lots",
        consumer_start_from="latest",  # this page shows this test's morning, not earlier tests'
    )
    async with running_console(settings) as running:
        yield running


async def provision_gate(validation: str, station: str, gate_id: str | None = None) -> DeviceSigner:
    gate_id = gate_id or f"{station}-EN-{uuid.uuid4().hex[:4].upper()}"
    direction = "exit" if "-EX" in gate_id else "entry"
    async with httpx.AsyncClient(base_url=validation) as http:
        response = await http.post(
            "/v1/gates",
            json={"gate_id": gate_id, "station": station, "direction": direction},
            headers={"Authorization": f"Bearer {VALIDATION_ADMIN}"},
        )
    assert response.status_code == 201, response.text
    return DeviceSigner(gate_id, response.json()["secret"])


async def provision_network(validation: str, parking: str) -> None:
    """Every station's entry and exit gate (those the morning's events name), two more that
    stay quiet and a disabled one; the test's four lots."""
    for line in LINES:
        for station in line.stations:
            for side in ("EN", "EX"):
                await provision_gate(validation, station.code, f"{station.code}-{side}")
    for gate_id in (*QUIET_GATES, DISABLED_GATE):
        await provision_gate(validation, gate_id.rsplit("-", 2)[0], gate_id)
    async with httpx.AsyncClient(base_url=validation) as http:
        response = await http.patch(
            f"/v1/gates/{DISABLED_GATE}",
            json={"enabled": False},
            headers={"Authorization": f"Bearer {VALIDATION_ADMIN}"},
        )
        assert response.status_code == 200, response.text
    async with httpx.AsyncClient(base_url=parking) as http:
        for lot_id, places in LOTS.items():
            response = await http.put(
                f"/v1/lots/{lot_id}",
                json={
                    "name": f"Bãi {lot_id}",
                    "district": "Hoàn Kiếm",
                    "address": "Phố Tràng Tiền",
                    "motorbike_capacity": places["motorbike"],
                    "car_capacity": places["car"],
                },
                headers={"Authorization": f"Bearer {PARKING_ADMIN}"},
            )
            assert response.status_code == 200, response.text


async def validate_at_gate(validation: str, gate: DeviceSigner) -> dict[str, Any]:
    """A rider's phone shows a fresh dynamic QR; the gate scans it and asks validation."""
    now = int(time.time())
    device = Ed25519PrivateKey.generate()
    credential = Credential(
        kid=ISSUER_KID,
        ticket_id=uuid.uuid4(),
        product="METRO-DAY",
        rider_category=RiderCategory.REGULAR,
        valid_from=now - 3600,
        valid_until=now + 86_400,
        lines=("2A",),
        device_public_key=public_key_bytes(device),
    )
    qr = make_dynamic_qr(sign_credential(credential, ISSUER), device, at=now, counter=1)
    body = orjson.dumps(
        {"qr": qr, "gate_id": gate.device_id, "scanned_at": datetime.now(UTC).isoformat()}
    )
    headers = {**gate.headers("POST", "/v1/validations", body), "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=validation) as http:
        response = await http.post("/v1/validations", content=body, headers=headers)
    assert response.status_code == 200, response.text
    decided: dict[str, Any] = response.json()
    return decided


def _at(event: Event, unix_s: float) -> Event:
    return dataclasses.replace(event, time=datetime.fromtimestamp(unix_s, UTC))


def morning_traffic(now: float) -> list[tuple[str, str, Event]]:
    """A believable morning, in the shapes the producers publish: validations at every station
    (busier at the termini), the usual rejections, two silent gates, four lots filling up,
    fares and parking fees through the ledger, and a few alerts."""
    rng = random.Random(7)
    busy = {"2A-01": 3.0, "2A-09": 2.5, "2A-12": 2.0, "3-08": 2.5, "3-01": 1.8}
    reasons = (
        ["qr_expired"] * 6
        + ["insufficient_balance"] * 3
        + ["replayed"] * 2
        + [
            "wrong_line",
            "ticket_expired",
            "already_inside",
            "not_inside",
        ]
    )
    out: list[tuple[str, str, Event]] = []
    for line in LINES:
        for station in line.stations:
            weight = busy.get(station.code, 1.0)
            silent = station.code in ("2A-11", "3-04")
            for _ in range(int(rng.uniform(14, 22) * weight)):
                ago = rng.uniform(0, 1800) if not silent else rng.uniform(1100, 1500)
                gate = f"{station.code}-{'EN' if rng.random() < 0.55 else 'EX'}"
                ok = rng.random() > 0.07
                event = validation_event(
                    station=station.code,
                    gate_id=gate,
                    accepted=ok,
                    reason=None if ok else rng.choice(reasons),
                    decided_at=now - ago,
                    action="entry" if gate.endswith("EN") else "exit",
                )
                out.append(("transit.validations", str(event.data["ticket_id"]), event))
    for _ in range(60):  # earlier rejections, for the reasons chart
        station_code = rng.choice(["2A-01", "2A-09", "3-08", "3-01"])
        event = validation_event(
            station=station_code,
            gate_id=f"{station_code}-EN",
            accepted=False,
            reason=rng.choice(reasons),
            decided_at=now - rng.uniform(1800, 3 * 3600),
        )
        out.append(("transit.validations", str(event.data["ticket_id"]), event))
    for _ in range(5):  # a burst of replayed codes at one gate: an alert
        event = validation_event(
            station="2A-08",
            gate_id="2A-08-EN",
            accepted=False,
            reason="replayed",
            decided_at=now - rng.uniform(100, 130),
        )
        out.append(("transit.validations", str(event.data["ticket_id"]), event))

    midnight = datetime.fromtimestamp(now, HANOI).replace(hour=0, minute=0, second=0, microsecond=0)
    hanoi_start = max(now - 7 * 3600, midnight.timestamp())
    for _ in range(220):
        moment = rng.uniform(hanoi_start, now)
        out.append(
            _transfer(
                rng,
                "charge",
                rng.choice([8_000, 9_000, 12_000, 15_000, 19_000]),
                "transit",
                None,
                moment,
            )
        )
    for _ in range(45):
        lot = rng.choice(list(LOTS))
        out.append(
            _transfer(
                rng,
                "capture",
                rng.choice([5_000, 8_000, 25_000, 35_000]),
                "parking",
                lot,
                rng.uniform(hanoi_start, now),
            )
        )
    out.append(_transfer(rng, "refund", 12_000, "transit", None, now - 900))
    for _ in range(12):
        out.append(
            _transfer(
                rng,
                "topup",
                rng.choice([50_000, 100_000, 200_000]),
                None,
                None,
                rng.uniform(hanoi_start, now),
            )
        )

    for _ in range(40):
        product = rng.choice(["METRO-DAY", "METRO-MONTH", "METRO-SINGLE", "BUS-MONTH-ALL"])
        ticket_id = str(uuid.uuid4())
        issued = Event(
            type=TICKET_ISSUED,
            source=ticketing_events.SOURCE,
            subject=ticket_id,
            data={
                "ticket_id": ticket_id,
                "product_code": product,
                "kind": "pass",
                "price_vnd": 40_000,
            },
        )
        out.append((TICKETS_TOPIC, ticket_id, _at(issued, rng.uniform(hanoi_start, now))))

    hk01, bd01 = list(LOTS)[:2]  # the other two lots had no traffic
    occupancy = {
        (hk01, VehicleType.MOTORBIKE): 241,
        (hk01, VehicleType.CAR): 31,
        (bd01, VehicleType.MOTORBIKE): 122,
        (bd01, VehicleType.CAR): 120,
    }
    for sequence, ((lot, vehicle), occupied) in enumerate(occupancy.items(), start=1):
        capacity = LOTS[lot][vehicle.value]
        session = uuid.uuid4()
        plate = f"{rng.choice(['29', '30', '51'])}{rng.choice('ABCFGH')}-***.{rng.randint(10, 99)}"
        opened = parking_events.session_event(
            SESSION_OPENED,
            session,
            {
                "lot_id": lot,
                "lane_id": f"{lot}-IN-1",
                "vehicle_type": vehicle.value,
                "plate": plate,
                "method": "plate",
            },
        )
        out.append(("parking.sessions", str(session), _at(opened, now - 60 * sequence)))
        changed = parking_events.occupancy_changed(
            lot,
            vehicle,
            Count(True, occupied, capacity, 1000 + sequence),
            change=1,
            session_id=session,
            at=datetime.fromtimestamp(now - 60 * sequence, UTC),
        )
        out.append(("parking.occupancy", lot, _at(changed, now - 60 * sequence)))

    suspense = payments_events.notification_unmatched(
        bank_transaction_id="FT26112207431",
        cause="amount_mismatch",
        amount=30_000,
        reference="CPQ7K2M9",
        expected_amount=25_000,
        payment_request_id=uuid.uuid4(),
        suspense_transfer_id=uuid.uuid4(),
        detail="Paid 30,000 VND for a 25,000 VND request.",
    )
    out.append(("ops.alerts", suspense.subject, _at(suspense, now - 1500)))
    return out


def _transfer(
    rng: random.Random, kind: str, amount: int, source: str | None, lot: str | None, moment: float
) -> tuple[str, str, Event]:
    wallet = uuid.UUID(int=rng.getrandbits(128))
    event = payments_events.transfer_posted(
        TransferDraft(
            id=uuid.UUID(int=rng.getrandbits(128)),
            kind=kind,
            amount=amount,
            debit=Leg(wallet, ("rider_wallet",)),
            credit=Leg(uuid.uuid4(), ("transit_revenue",)),
            wallet_account_id=wallet,
            source=source,
            lot_id=lot,
        )
    )
    return "payments.ledger", str(wallet), _at(event, moment)


async def probe_lands(publisher: Publisher, redis: Redis, sent: list[Event]) -> bool:
    """Starting from the latest offsets, the group skips what was published before it joined.
    Probe every partition, so that each has a committed offset: a later rebalance then resumes
    from there instead of jumping to the latest offset past the test's own validation."""
    producer = await publisher.connect()
    partitions = sorted(await producer.partitions_for("transit.validations"))
    probes = [validation_event(station="2A-01", gate_id="2A-01-EN") for _ in partitions]
    sent += probes  # they count where they land, like any validation
    for partition, probe in zip(partitions, probes, strict=True):
        await producer.send_and_wait(
            "transit.validations",
            probe.value(),
            key=str(probe.data["ticket_id"]).encode(),
            headers=probe.headers(),
            partition=partition,
        )
    for _ in range(40):
        if all([await redis.exists(seen_key(probe.id)) for probe in probes]):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_the_dashboard_counts_what_was_sent_and_shows_a_validation_within_two_seconds(
    console: Console,
    validation: str,
    parking: str,
    publisher: Publisher,
    operator_redis: Redis,
    artifacts: Path,
    tmp_path: Path,
    one_browser_at_a_time: None,
) -> None:
    binary = chromium_path()
    if binary is None:
        pytest.fail(INSTALL_HINT)
    await provision_network(validation, parking)
    probes: list[Event] = []
    await eventually(lambda: probe_lands(publisher, operator_redis, probes), timeout_s=60)
    traffic = morning_traffic(time.time())
    await publisher.publish_many(
        [(topic, key, e.value(), e.headers()) for topic, key, e in traffic]
    )
    gate = await provision_gate(validation, STATION)
    seen = [seen_key(event.id) for _, _, event in traffic]

    async def applied() -> bool:
        # Every event, not the last published: the partitions are consumed independently, and
        # a station's count still catching up would move the counter read below by more than
        # the riders who pass.
        return int(await operator_redis.exists(*seen)) == len(seen)

    await eventually(applied, timeout_s=90)

    browser = await Browser.launch(
        binary,
        tmp_path / "chromium-profile",
        artifacts / "chromium.log",
        width=WIDTH,
        height=HEIGHT,
    )
    try:
        await browser.navigate(console.url)
        await browser.wait_for("!document.getElementById('login-view').hidden", what="login screen")
        # A user name guessed at too often is told so, not that the server is unreachable.
        await browser.type_into("#username", "guesser")
        for attempt in range(6):
            await browser.evaluate(
                "document.getElementById('password').value = '';"
                " document.getElementById('login-error').hidden = true"
            )
            await browser.type_into("#password", f"wrong-{attempt}")
            await browser.click("#login-submit")
            await browser.wait_for(
                "!document.getElementById('login-error').hidden", what="the login answer"
            )
        throttled = await browser.evaluate("document.getElementById('login-error').textContent")
        assert throttled.startswith("Quá nhiều lần nhập sai mật khẩu"), throttled
        expected = ("status of 401 (Unauthorized)", "status of 429 (Too Many Requests)")
        browser.problems[:] = [p for p in browser.problems if not p.endswith(expected)]
        await browser.evaluate("document.getElementById('username').value = ''")
        await browser.evaluate("document.getElementById('password').value = ''")
        await browser.type_into("#username", "admin")
        await browser.type_into("#password", ADMIN_PASSWORD)
        await browser.click("#login-submit")
        await browser.wait_for("!document.getElementById('app-view').hidden", what="dashboard")
        await browser.wait_for(
            "document.getElementById('live').dataset.status === 'on'", what="live stream"
        )
        assert await browser.evaluate("sessionStorage.getItem('citypass.operator.token') !== null")
        # The console's figures, against what was sent (only probes that landed count).
        landed = [p for p in probes if await operator_redis.exists(seen_key(p.id))]
        sent = [*landed, *(event for _, _, event in traffic)]
        await check_counts(browser, sent, validation, parking)
        never = f"document.querySelector('#gates .chip[data-gate=\"{gate.device_id}\"]')"
        assert await browser.evaluate(f"{never}.dataset.state") == "never_reported"
        counter = f"document.querySelector('[data-place=\"{STATION}\"] .count-today-accepted')"
        before = int(
            await browser.wait_for(f"{counter} && {counter}.textContent", what="station counter")
        )

        # The 2 s target is the dashboard's, not the machine's: on shared vCPUs the hypervisor
        # sometimes takes the CPU away for seconds. Up to three riders pass; each must show up,
        # and at least one within 2 s; every delay is kept as an artifact.
        delays: list[float] = []
        for passed in range(1, 4):
            started = time.monotonic()
            decided = await validate_at_gate(validation, gate)
            assert decided["decision"] == "accept", decided
            row = (
                f"document.querySelector('#tail tr[data-event-id=\"{decided['validation_id']}\"]')"
            )
            await browser.wait_for(f"{row} !== null", timeout_s=30, what="validation in the tail")
            await browser.wait_for(
                f"Number({counter}.textContent.replace(/\\D/g, '')) === {before + passed}",
                timeout_s=30,
                what=f"station counter + {passed}",
            )
            delays.append(time.monotonic() - started)
            if delays[-1] <= 2.0:
                break
        (artifacts / "operator-dashboard-delay.txt").write_text(
            "gate validation on the dashboard (tail and station counter) after "
            + ", ".join(f"{d:.3f} s" for d in delays)
            + "\n"
        )
        assert min(delays) <= 2.0, f"validations reached the dashboard after {delays} s"
        await browser.wait_for(
            f"{never}.dataset.state === 'online'", timeout_s=15, what="the gate online"
        )
        row_text = await browser.evaluate(f"{row}.textContent")
        assert "Thượng Đình" in row_text
        assert gate.device_id in row_text

        await browser.wait_for(
            "document.querySelectorAll('#alerts li').length >= 2", what="alerts listed"
        )
        assert await browser.evaluate(
            "document.querySelector('#alerts [data-rule=\"replay_burst\"]') !== null"
        )
        first_alert = await browser.evaluate("document.querySelector('#alerts li').dataset.alertId")
        await browser.click("#alerts li button.ack")
        await browser.wait_for(
            f"document.querySelector('#alerts li[data-alert-id=\"{first_alert}\"]') === null",
            what="acknowledged alert leaves the open list",
        )
        scraped = "#pipeline-services [data-service='validation'] .state.up"
        await browser.wait_for(
            f"document.querySelector({scraped!r}) !== null",
            timeout_s=60,
            what="validation scraped",
        )

        await browser.click(".lang button[data-lang='en']")
        assert (
            await browser.evaluate(
                "document.querySelector('[data-i18n=\"tail.title\"]').textContent"
            )
            == "Live events"
        )
        await browser.click(".lang button[data-lang='vi']")
        assert (
            await browser.evaluate(
                "document.querySelector('[data-i18n=\"tail.title\"]').textContent"
            )
            == "Sự kiện trực tiếp"
        )
        await browser.screenshot(artifacts / "operator-dashboard.png")
        assert browser.problems == []
    finally:
        await browser.close()


SNAPSHOT = """(() => {
  const n = (el) => (el ? Number(el.textContent.replace(/\\D/g, "")) : null);
  const body = document.getElementById("stations");
  const stations = {};
  for (const tr of body.querySelectorAll("tr[data-place]")) {
    stations[tr.dataset.place] = [".count-minute-accepted", ".count-today-accepted",
      ".count-minute-rejected", ".count-today-rejected"].map((c) => n(tr.querySelector(c)));
  }
  const gates = {};
  for (const chip of document.querySelectorAll("#gates .chip")) {
    gates[chip.dataset.gate] = chip.dataset.state;
  }
  const lots = {};
  for (const li of document.querySelectorAll("#lots li")) {
    lots[`${li.dataset.lot}|${li.dataset.vehicle}`] =
      li.dataset.reported === "true" ? n(li.querySelector(".lot-free .n")) : null;
  }
  return {
    minute: body.dataset.minute ? Math.floor(Date.parse(body.dataset.minute) / 60000) : null,
    day: body.dataset.day || null,
    now: Date.now() / 1000,
    stations, gates, lots,
    kpi: [document.getElementById("kpi-gates").textContent,
      n(document.getElementById("kpi-gates-silent")),
      n(document.getElementById("kpi-gates-never"))],
  };
})()"""
SILENT_AFTER_S = 15 * 60  # OPERATOR_GATE_SILENT_AFTER


def expected_stations(sent: list[Event], minute: int, day: str) -> dict[str, list[int]]:
    """Per station: accepted this minute, accepted today, rejected this minute, rejected today."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for event in sent:
        if event.type not in (
            VALIDATION_ACCEPTED,
            VALIDATION_REJECTED,
        ):
            continue
        at = parse_time(event.data["decided_at"])
        assert at is not None
        rejected = 2 if event.type == VALIDATION_REJECTED else 0
        row = counts[str(event.data["station"])]
        row[rejected] += int(at // 60) == minute
        row[rejected + 1] += hanoi_day(at) == day
    return dict(counts)


def expected_gates(
    sent: list[Event], listed: list[dict[str, Any]], now: float
) -> tuple[dict[str, str], set[str]]:
    """Each provisioned gate's state as the sent events make it, and the gates whose state
    flips within 15 s of `now` (not compared)."""
    last: dict[str, float] = {}
    for event in sent:
        if event.type in (
            VALIDATION_ACCEPTED,
            VALIDATION_REJECTED,
        ):
            at = parse_time(event.data["decided_at"])
            assert at is not None
            gate_id = str(event.data["gate_id"])
            last[gate_id] = max(at, last.get(gate_id, at))
    states, borderline = {}, set()
    for gate in listed:
        gate_id, seen = gate["gate_id"], last.get(gate["gate_id"])
        if not gate["enabled"]:
            states[gate_id] = "disabled"
        elif seen is None:
            states[gate_id] = "never_reported"
        else:
            states[gate_id] = "online" if now - seen < SILENT_AFTER_S else "silent"
            if abs(now - seen - SILENT_AFTER_S) < 15:
                borderline.add(gate_id)
    return states, borderline


async def check_counts(browser: Browser, sent: list[Event], validation: str, parking: str) -> None:
    """Station columns, gate states and totals, and lots on the page equal what was sent (and
    what validation and parking list); retried while the page may still be catching up."""
    async with httpx.AsyncClient() as http:
        listed_gates = (await http.get(f"{validation}/v1/gates")).json()
        listed_lots = (await http.get(f"{parking}/v1/lots")).json()
    free = {
        f"{e.data['lot_id']}|{e.data['vehicle_type']}": e.data["free"]
        for e in sent
        if e.type == OCCUPANCY_CHANGED
    }
    lots: dict[str, int | None] = {}
    for lot in listed_lots:
        places = {"motorbike": lot["motorbike_capacity"], "car": lot["car_capacity"]}
        for vehicle in [v for v, n in places.items() if n > 0] or list(places):
            lots[f"{lot['lot_id']}|{vehicle}"] = free.get(f"{lot['lot_id']}|{vehicle}")
    ours = {key for key in lots if key.split("|")[0] in LOTS}
    problems: list[str] = ["not checked yet"]
    deadline = time.monotonic() + 30
    while problems and time.monotonic() < deadline:
        page = await browser.evaluate(SNAPSHOT)
        problems = []
        # Which minute and day the page counts (the current ones if it does not say).
        minute = page["minute"] if page["minute"] is not None else int(page["now"] // 60)
        stations = expected_stations(sent, minute, page["day"] or hanoi_day(page["now"]))
        for place, want in stations.items():
            if page["stations"].get(place) != want:
                problems.append(f"station {place}: page {page['stations'].get(place)}, sent {want}")
        states, borderline = expected_gates(sent, listed_gates, page["now"])
        for gate_id, state in states.items():
            if gate_id not in borderline and page["gates"].get(gate_id) != state:
                problems.append(f"gate {gate_id}: page {page['gates'].get(gate_id)}, sent {state}")
        if not borderline:
            tally = {
                s: list(states.values()).count(s) for s in ("online", "silent", "never_reported")
            }
            kpi = [
                f"{tally['online']}/{sum(tally.values())}",
                tally["silent"],
                tally["never_reported"],
            ]
            if page["kpi"] != kpi:
                problems.append(f"gate totals: page {page['kpi']}, sent {kpi}")
        missing = sorted(lots.keys() - page["lots"].keys())
        if missing:
            problems.append(f"lots missing from the page: {missing}")
        for key in ours:
            if page["lots"].get(key) != lots[key]:
                problems.append(f"lot {key}: page {page['lots'].get(key)}, sent free {lots[key]}")
        if problems:
            await asyncio.sleep(0.5)
    assert not problems, "\n".join(problems)
    # The morning has each kind the issue saw: never reported, silent, online; quiet lots.
    assert {"online", "silent", "never_reported", "disabled"} <= set(states.values())
    assert any(lots[key] is None for key in ours)
    assert any(lots[key] is not None for key in ours)
