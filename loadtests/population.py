"""The riders and gates a load test uses, created through the real APIs as a city would.

Riders sign up in ticketing, register a device key, top up through the bank sandbox, buy a
metro day pass and fetch its credential. Gates are provisioned in validation by an operator.
The result (device keys, credentials, gate secrets) is written to one JSON file that every
Locust worker reads; nothing here is shared with the production code paths except the APIs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization

from citypass.rider import RiderClient, RiderHome
from loadtests.stack import bank_pays_topup
from services.payments.settings import PaymentsSettings
from services.validation.settings import ValidationSettings

DAY_PASS = "METRO-DAY"
TOP_UP_VND = 100_000
SET_UP_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class Urls:
    ticketing: str = "http://127.0.0.1:8001"
    validation: str = "http://127.0.0.1:8002"
    payments: str = "http://127.0.0.1:8004"


async def create_rider(
    urls: Urls, payments: httpx.AsyncClient, index: int, run_id: str, phone: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home_dir:
        home = RiderHome(Path(home_dir))
        # Set-up, not the measurement: a machine slowed by CI's test run must not fail it.
        http = httpx.AsyncClient(base_url=urls.ticketing, timeout=SET_UP_TIMEOUT_S)
        client = RiderClient(home, urls.ticketing, http)
        try:
            await client.sign_up(phone, f"load-{run_id}-{index}")
            await client.register_device(label="locust")
            topup = await client.top_up(TOP_UP_VND)
            # Asynchronous like every other call here: a blocking call would stall the other
            # riders' requests past their timeouts on a slow machine (CI's smoke run did).
            await bank_pays_topup(
                payments,
                topup["qr"],
                TOP_UP_VND,
                PaymentsSettings().bank_webhook_secret.get_secret_value(),
            )
            purchase = await wait_for_purchase(client)
            credential = await client.credential(purchase)
            private = home.device_key().private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return {
                "phone": phone,
                "device_key": base64.b64encode(private).decode(),
                "credential": credential,
            }
        finally:
            await client.close()


async def wait_for_purchase(client: RiderClient) -> str:
    """Buy the day pass once the top-up has reached the wallet (the bank is asynchronous)."""
    deadline = time.monotonic() + SET_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        wallet = await client.wallet()
        if int(wallet.get("balance", 0)) >= 40_000:
            purchase = await client.buy(DAY_PASS)
            return str(purchase["ticket"]["id"])
        await asyncio.sleep(0.1)
    raise RuntimeError("the top-up never reached the wallet")


def provision_gates(urls: Urls, run_id: str) -> list[dict[str, Any]]:
    """An entry and an exit gate at every station of line 2A, for this run only."""
    token = ValidationSettings().admin_token.get_secret_value()
    gates = []
    with httpx.Client(
        base_url=urls.validation, timeout=10, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        lines = http.get("/v1/lines")  # the network version in force, from its feed
        lines.raise_for_status()
        line = next(line for line in lines.json() if line["code"] == "2A")
        for station in line["stations"]:
            code = station["code"]
            for direction in ("entry", "exit"):
                gate_id = f"LT{run_id}-{code}-{direction[:2].upper()}"
                response = http.post(
                    "/v1/gates",
                    json={
                        "gate_id": gate_id,
                        "station": code,
                        "direction": direction,
                    },
                )
                response.raise_for_status()
                gates.append(
                    {
                        "gate_id": gate_id,
                        "station": code,
                        "direction": direction,
                        "secret": response.json()["secret"],
                    }
                )
    return gates


async def build(urls: Urls, riders: int, concurrency: int = 8) -> dict[str, Any]:
    run_id = secrets.token_hex(2)
    # Consecutive numbers from a random start: runs against the same database rarely overlap.
    # 098 is a real Viettel prefix (095, for one, is unassigned and refused at sign-up).
    first = secrets.randbelow(10**7 - riders)
    limit = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(base_url=urls.payments, timeout=SET_UP_TIMEOUT_S) as payments:

        async def one(index: int) -> dict[str, Any]:
            async with limit:
                phone = f"098{first + index:07d}"
                return await create_rider(urls, payments, index, run_id, phone)

        created = await asyncio.gather(*(one(i) for i in range(riders)))
    return {"run_id": run_id, "riders": created, "gates": provision_gates(urls, run_id)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--riders", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    population = asyncio.run(build(Urls(), args.riders))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(population))
    args.out.chmod(0o600)  # device keys and gate secrets
    print(
        f"{len(population['riders'])} riders with day passes, "
        f"{len(population['gates'])} gates → {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
