"""Finding a receipt again: what parking answers strangers and drivers over HTTP.

An outside review found a stranger's receipt by scanning `GET /v1/receipts?plate=&entered_at=`
(±15 minutes) in 5 unauthenticated requests, and the token it returned opened a dispute. A
lookup now needs the receipt code shown at the exit, is limited per client address, and hands
out a token that only reads that one receipt.

Parking answers here through a real uvicorn server, so client addresses are what uvicorn
makes of the connection: each test speaks as clients of its own through `X-Forwarded-For`,
which uvicorn honours from 127.0.0.1 (a local proxy), as it would behind a real one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from citypass import parking as parking_cli
from citypass.servers import free_port
from services.parking.settings import ParkingSettings
from services.parking.tokens import (
    RECEIPT_CODE_ALPHABET,
    ReceiptScope,
    receipt_code,
    receipt_token,
    receipt_token_scope,
    typed_receipt_code,
)
from tests.parking.conftest import (
    TOKEN_SECRET,
    create_lot,
    enter,
    leave,
    now,
    plate_read,
    random_plate,
)

LOOKUPS_PER_CLIENT = ParkingSettings().receipt_lookups_per_client


@pytest.fixture(scope="module")
async def parking_url(app: FastAPI, http: httpx.AsyncClient) -> AsyncIterator[str]:
    """The session's parking app (its lifespan run by `http`) behind a real uvicorn server on
    a free port. Not a second parking process: that would join the parking consumer group,
    and the group would wait for it to time out after it stopped."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=free_port(),
            lifespan="off",
            log_config=None,
            access_log=False,
            http="httptools",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn stopped during start-up"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def parking(parking_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=parking_url, timeout=30) as client:
        yield client


def client_address() -> str:
    """A client address of the test's own (TEST-NET-2), so no other test shares its budget."""
    return f"198.51.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def as_client(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def park(
    parking: httpx.AsyncClient, minutes: int = 8
) -> tuple[str, datetime, dict[str, Any]]:
    """A driver parks (within the free grace period) and leaves: the plate, the entry time
    and the exit lane's answer."""
    lot = await create_lot(parking)
    plate = random_plate()
    entered_at = now() - timedelta(minutes=minutes)
    entry = await enter(parking, lot, entered_at, plate_read=plate_read(plate))
    assert entry.status_code == 200, entry.text
    exit_ = await leave(parking, lot, now(), plate_read=plate_read(plate))
    assert exit_.status_code == 200, exit_.text
    decision: dict[str, Any] = exit_.json()
    assert decision["decision"] == "open", decision
    return plate, entered_at, decision


def wrong_code(right: str) -> str:
    while True:
        code = "".join(secrets.choice(RECEIPT_CODE_ALPHABET) for _ in range(10))
        if code != right.replace("-", ""):
            return f"{code[:5]}-{code[5:]}"


class TestStrangers:
    async def test_the_plate_and_the_entry_time_give_no_receipt_and_no_token(
        self, parking: httpx.AsyncClient
    ) -> None:
        plate, entered_at, decision = await park(parking)
        stranger = as_client(client_address())
        answers = []
        # What the outsider did: five guesses spread over the ±15 minute window…
        for offset in (-12, -6, 0, 6, 12):
            guess = entered_at + timedelta(minutes=offset)
            answers.append(
                await parking.get(
                    "/v1/receipts",
                    params={"plate": plate, "entered_at": guess.isoformat()},
                    headers=stranger,
                )
            )
        # …and then codes guessed at random.
        for _ in range(3):
            answers.append(
                await parking.get(
                    "/v1/receipts",
                    params={"plate": plate, "code": wrong_code(decision["receipt_code"])},
                    headers=stranger,
                )
            )
        for answer in answers:
            assert answer.status_code in (404, 422, 429), answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert decision["session_id"] not in answer.text
            assert decision["receipt_token"] not in answer.text
        assert [answer.json()["code"] for answer in answers[5:]] == ["receipt_not_found"] * 3


class TestDrivers:
    async def test_the_code_from_the_exit_finds_the_receipt_with_a_read_token(
        self, parking: httpx.AsyncClient
    ) -> None:
        plate, _, decision = await park(parking)
        code = decision["receipt_code"]
        typed = code.lower().replace("-", " ")  # as a driver might type it off the paper
        found = await parking.get(
            "/v1/receipts",
            params={"plate": plate.lower(), "code": typed},
            headers=as_client(client_address()),
        )
        assert found.status_code == 200, found.text
        receipt = found.json()
        assert receipt["session_id"] == decision["session_id"]
        assert receipt["receipt_code"] == code
        assert receipt["fee"] == decision["fee"]
        assert receipt["read_token"] != decision["receipt_token"]
        assert decision["receipt_token"] not in found.text

        reopened = await parking.get(
            f"/v1/receipts/{decision['session_id']}", params={"token": receipt["read_token"]}
        )
        assert reopened.status_code == 200, reopened.text
        assert reopened.json()["session_id"] == decision["session_id"]
        assert decision["receipt_token"] not in reopened.text

    async def test_the_code_of_another_plate_finds_nothing(
        self, parking: httpx.AsyncClient
    ) -> None:
        _, _, decision = await park(parking)
        other_plate, _, _ = await park(parking)
        found = await parking.get(
            "/v1/receipts",
            params={"plate": other_plate, "code": decision["receipt_code"]},
            headers=as_client(client_address()),
        )
        assert found.status_code == 404
        assert found.json()["code"] == "receipt_not_found"

    async def test_the_cli_finds_the_receipt_by_plate_and_code(
        self, parking: httpx.AsyncClient, parking_url: str
    ) -> None:
        plate, _, decision = await park(parking)
        args = argparse.Namespace(url=parking_url, plate=plate, code=decision["receipt_code"])
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            code = await asyncio.to_thread(parking_cli.receipt_command, args)
        shown = output.getvalue()
        assert code == 0, shown
        assert decision["session_id"] in shown
        assert decision["receipt_code"] in shown
        assert f"{decision['fee']:,} VND" in shown
        assert decision["receipt_token"] not in shown


class TestLookupLimit:
    async def test_a_client_address_gets_429_past_its_budget_and_others_do_not(
        self, parking: httpx.AsyncClient
    ) -> None:
        plate, _, decision = await park(parking)
        guesser = as_client(client_address())
        for _ in range(LOOKUPS_PER_CLIENT):
            missed = await parking.get(
                "/v1/receipts",
                params={"plate": plate, "code": wrong_code(decision["receipt_code"])},
                headers=guesser,
            )
            assert missed.status_code == 404, missed.text
        # Past the budget even the right code is refused: guessing gets no further.
        refused = await parking.get(
            "/v1/receipts",
            params={"plate": plate, "code": decision["receipt_code"]},
            headers=guesser,
        )
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "too_many_requests"
        period_s = ParkingSettings().receipt_lookup_period.total_seconds()
        assert 1 <= int(refused.headers["Retry-After"]) <= period_s
        assert decision["session_id"] not in refused.text

        driver = await parking.get(
            "/v1/receipts",
            params={"plate": plate, "code": decision["receipt_code"]},
            headers=as_client(client_address()),
        )
        assert driver.status_code == 200, driver.text


class TestTokenScopes:
    async def test_a_lookup_token_reads_the_receipt_but_cannot_dispute_it(
        self, parking: httpx.AsyncClient
    ) -> None:
        plate, _, decision = await park(parking)
        found = await parking.get(
            "/v1/receipts",
            params={"plate": plate, "code": decision["receipt_code"]},
            headers=as_client(client_address()),
        )
        assert found.status_code == 200, found.text
        read_token = found.json()["read_token"]
        disputes = f"/v1/receipts/{decision['session_id']}/disputes"
        dispute = {"reason": "wrong_plate", "detail": "Not my car."}

        opened = await parking.post(disputes, params={"token": read_token}, json=dispute)
        assert opened.status_code == 403, opened.text
        assert opened.json()["code"] == "exit_token_required"
        listed = await parking.get(disputes, params={"token": read_token})
        assert listed.status_code == 403, listed.text
        assert listed.json()["code"] == "exit_token_required"

        # The token shown at the exit lane is the driver's proof: it opens the dispute.
        opened = await parking.post(
            disputes, params={"token": decision["receipt_token"]}, json=dispute
        )
        assert opened.status_code == 201, opened.text

    async def test_a_read_token_of_one_session_opens_no_other(
        self, parking: httpx.AsyncClient
    ) -> None:
        plate, _, decision = await park(parking)
        _, _, other = await park(parking)
        found = await parking.get(
            "/v1/receipts",
            params={"plate": plate, "code": decision["receipt_code"]},
            headers=as_client(client_address()),
        )
        assert found.status_code == 200, found.text
        stolen = await parking.get(
            f"/v1/receipts/{other['session_id']}", params={"token": found.json()["read_token"]}
        )
        assert stolen.status_code == 404
        assert stolen.json()["code"] == "receipt_not_found"


class TestReceiptCodes:
    def test_a_code_is_ten_unambiguous_characters(self) -> None:
        code = receipt_code(TOKEN_SECRET, uuid.uuid4())
        assert len(code) == 11
        assert code[5] == "-"
        assert set(code.replace("-", "")) <= set(RECEIPT_CODE_ALPHABET)
        assert not set("ILOU") & set(RECEIPT_CODE_ALPHABET)

    def test_a_code_is_read_as_a_driver_types_it(self) -> None:
        assert typed_receipt_code("k7qmd 3xrw9") == "K7QMD-3XRW9"
        assert typed_receipt_code("K7QMD-3XRWg") == "K7QMD-3XRWG"
        assert typed_receipt_code("IL0OQ-MD3XR") == "1100Q-MD3XR"  # I, L → 1; O → 0

    @pytest.mark.parametrize("typed", ["K7QMD-3XRW", "K7QMD-3XRW99", "K7QMD-3XRWU", "K7QMD_3XRW9"])
    def test_what_cannot_be_a_code_is_refused(self, typed: str) -> None:
        assert typed_receipt_code(typed) is None

    def test_codes_and_tokens_differ_per_session_and_scope(self) -> None:
        first, second = uuid.uuid4(), uuid.uuid4()
        assert receipt_code(TOKEN_SECRET, first) != receipt_code(TOKEN_SECRET, second)
        read = receipt_token(TOKEN_SECRET, first, ReceiptScope.read)
        exit_ = receipt_token(TOKEN_SECRET, first, ReceiptScope.exit)
        assert read != exit_
        assert receipt_token_scope(TOKEN_SECRET, first, read) is ReceiptScope.read
        assert receipt_token_scope(TOKEN_SECRET, first, exit_) is ReceiptScope.exit
        assert receipt_token_scope(TOKEN_SECRET, second, exit_) is None
