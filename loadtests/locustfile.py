"""Gate validation as real gates produce it, plus tagged parking and purchase scenarios.

Each simulated rider owns a real device key and a real day-pass credential (made by
`loadtests/population.py` through ticketing, payments and the bank sandbox). Every request
carries a freshly signed dynamic QR and a gate-signed HTTP request. The mix: mostly entries
and exits that must be accepted, plus replays, expired and tampered codes that must be
rejected with the right reason. A decision other than the expected one is a failure.

    CITYPASS_POPULATION=var/loadtest/population.json locust -f loadtests/locustfile.py ...
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from locust import FastHttpUser, between, tag, task

from citypass.rider import signed_credential
from shared.devicesigning import DeviceSigner
from shared.ticketcodec import SignedCredential, make_dynamic_qr

POPULATION_FILE = Path(os.environ.get("CITYPASS_POPULATION", "var/loadtest/population.json"))
if not POPULATION_FILE.is_file():
    raise SystemExit(
        f"No load-test population at {POPULATION_FILE}. Run `make loadtest` (it starts the stack "
        "if needed, creates the riders and gates, then runs this file), or, with the stack "
        "running (`make run`): `python -m loadtests.population --out "
        f"{POPULATION_FILE}`, then locust again (CITYPASS_POPULATION names another file)."
    )
POPULATION = json.loads(POPULATION_FILE.read_text())
EXPIRED_AGE_S = 120
SIGNATURE_OR_FORMAT = {"malformed", "bad_issuer_signature", "bad_device_signature", "unknown_key"}

_next_rider = iter(range(10**9))
_rider_lock = threading.Lock()


class Gate:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.gate_id: str = spec["gate_id"]
        self.station: str = spec["station"]
        self.signer = DeviceSigner(spec["gate_id"], spec["secret"])


GATES = [Gate(spec) for spec in POPULATION["gates"]]
ENTRY_GATES = [g for g in GATES if g.gate_id.endswith("-EN")]
EXIT_GATES = [g for g in GATES if g.gate_id.endswith("-EX")]


class Rider:
    """A phone: its device key and credential, signing a new QR for every scan."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.device_key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(spec["device_key"]))
        self.credential: SignedCredential = signed_credential(spec["credential"])
        self.counter = random.randrange(1, 1000)

    def qr(self, at: int | None = None) -> str:
        self.counter += 1
        moment = int(time.time()) if at is None else at
        return make_dynamic_qr(self.credential, self.device_key, at=moment, counter=self.counter)


def tampered(qr: str) -> str:
    """One character of the Base45 payload changed, as a forger or a damaged screen would."""
    position = random.randrange(4, len(qr))
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
    replacement = random.choice([c for c in alphabet if c != qr[position]])
    return qr[:position] + replacement + qr[position + 1 :]


class GateTraffic(FastHttpUser):
    """A rider passing gates on line 2A; one simulated user per rider, so trips stay coherent."""

    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        with _rider_lock:
            index = next(_next_rider) % len(POPULATION["riders"])
        self.rider = Rider(POPULATION["riders"][index])
        self.inside = False

    def validate(self, gate: Gate, qr: str, expected: set[str], name: str) -> None:
        body = json.dumps(
            {"qr": qr, "gate_id": gate.gate_id, "scanned_at": datetime.now(UTC).isoformat()}
        ).encode()
        headers = {
            "Content-Type": "application/json",
            **gate.signer.headers("POST", "/v1/validations", body),
        }
        with self.client.post(
            "/v1/validations", data=body.decode(), headers=headers, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            reason = response.json()["reason"]
            if reason in expected:
                response.success()
            else:
                response.failure(f"expected {sorted(expected)}, got {reason}")

    @tag("validation")
    @task(20)
    def pass_gate(self) -> None:
        """Tap in at one station, or out at another: the common case, must be accepted."""
        if self.inside:
            gate = random.choice(EXIT_GATES)
            self.validate(gate, self.rider.qr(), {"ok"}, "validate: exit")
        else:
            gate = random.choice(ENTRY_GATES)
            self.validate(gate, self.rider.qr(), {"ok"}, "validate: entry")
        self.inside = not self.inside

    @tag("validation")
    @task(1)
    def replay(self) -> None:
        """A screenshot shown twice: the second scan must be refused as a replay."""
        gate = random.choice(EXIT_GATES if self.inside else ENTRY_GATES)
        qr = self.rider.qr()
        self.validate(gate, qr, {"ok"}, "validate: entry" if not self.inside else "validate: exit")
        self.inside = not self.inside
        self.validate(random.choice(GATES), qr, {"replayed"}, "validate: replay")

    @tag("validation")
    @task(1)
    def expired(self) -> None:
        """An old code (a photo of yesterday's screen) must be refused as expired."""
        qr = self.rider.qr(at=int(time.time()) - EXPIRED_AGE_S)
        self.validate(random.choice(GATES), qr, {"qr_expired"}, "validate: expired")

    @tag("validation")
    @task(1)
    def forged(self) -> None:
        """A tampered code must be refused by the signature or format checks."""
        self.validate(
            random.choice(GATES),
            tampered(self.rider.qr()),
            SIGNATURE_OR_FORMAT,
            "validate: tampered",
        )


class NoopBaseline(FastHttpUser):
    """Tagged separately: the same server's cheapest endpoint, for the bench ratio."""

    wait_time = between(0.5, 1.5)
    weight = 0

    @tag("noop")
    @task
    def healthz(self) -> None:
        self.client.get("/healthz", name="noop: /healthz")


class Purchases(FastHttpUser):
    """Tagged `purchases`: riders buying single bus rides through ticketing (host: :8001)."""

    wait_time = between(1, 3)
    weight = 0

    @tag("purchases")
    @task
    def buy_and_list(self) -> None:
        rider = random.choice(POPULATION["riders"])
        login = self.client.post(
            "/v1/sessions",
            json={
                "phone": rider["phone"],
                "password": f"load-{POPULATION['run_id']}-{POPULATION['riders'].index(rider)}",
            },
            name="purchase: login",
        )
        if login.status_code != 200:
            return
        token = login.json()["access_token"]
        self.client.post(
            "/v1/purchases",
            json={"product_code": "BUS-SINGLE-SHORT"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
            name="purchase: buy",
        )
