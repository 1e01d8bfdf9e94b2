"""Stored-value fares priced from the feed by the fare worker, on the real servers: Redis holds
each ticket's fare account, payments (PostgreSQL) the money. What riders paid is read from
payments' ledger table, never from the worker's own state."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
import pytest
from aiokafka import ConsumerRecord
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.validation import events
from services.validation.fare_accounts import account_key, fare_date
from services.validation.fare_worker import FareWorker
from services.validation.service import Validator
from shared.events import Event
from shared.fares.feed import read_feed
from shared.fares.tariff import Leg
from shared.fares.versions import NetworkVersion, NetworkVersions
from shared.kafka import Publisher
from tests.fares.support import TUESDAY_8AM, edited
from tests.fares.test_ledger import legs_of_a_day
from tests.validation.conftest import open_wallet, stored_value_ticket, top_up

DAY_CAP = 40_000
START = TUESDAY_8AM - 3 * 3600  # 05:00 in Hanoi, a Tuesday of the feed's calendar


@pytest.fixture(scope="session")
def fares(app: FastAPI, http: Any) -> FareWorker:
    worker: FareWorker = app.state.fares
    return worker


async def postings(db: asyncpg.Connection, wallet: str) -> list[tuple[str, int]]:
    """The wallet's fare charges and refunds as payments' ledger holds them."""
    rows = await db.fetch(
        "SELECT kind, amount FROM payments.transfers"
        " WHERE wallet_account_id = $1 AND kind IN ('charge', 'refund') ORDER BY posted_at",
        uuid.UUID(wallet),
    )
    return [(row["kind"], int(row["amount"])) for row in rows]


async def paid(db: asyncpg.Connection, wallet: str) -> int:
    return sum(a if kind == "charge" else -a for kind, a in await postings(db, wallet))


def accepted(ticket_id: str, wallet: str, leg: Leg, category: str = "regular") -> Event:
    """The gate's `validation.accepted` closing this leg (a metro exit, or a bus tap)."""
    metro = bool(leg.from_stop)
    vid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ticket_id}/{leg.leg_id}/exit"))
    data = {
        "validation_id": vid,
        "ticket_id": ticket_id,
        "decision": "accept",
        "kind": "stored_value",
        "action": "exit" if metro else "tap",
        "station": leg.to_stop or None,
        "line": leg.route_id if metro else None,
        "route": None if metro else leg.route_id,
        "rider_category": category,
        "decided_at": events.iso(leg.arrived_at),
        "wallet_account_id": wallet,
        "entry": {
            "validation_id": leg.leg_id,
            "station": leg.from_stop,
            "entered_at": events.iso(leg.departed_at),
        }
        if metro
        else None,
        "offline": True,
    }
    if not metro:
        data["validation_id"] = leg.leg_id
    return events.validation(data, accepted=True, at=leg.arrived_at)


async def deliver(fares: FareWorker, event: Event) -> None:
    await fares.on_validation_event(event, cast(ConsumerRecord, None))


def hanoi_legs(ticket: str, legs: list[Leg]) -> list[Leg]:
    """Leg ids unique to the ticket (an entry's validation id is a UUID in real events)."""
    return [
        Leg(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ticket}/{leg.leg_id}")), *_rest(leg))
        for leg in legs
    ]


def _rest(leg: Leg) -> tuple[str, int, int, str, str]:
    return leg.route_id, leg.departed_at, leg.arrived_at, leg.from_stop, leg.to_stop


async def rider(
    publisher: Publisher, validator: Validator, payments: Any, money: int
) -> tuple[str, str]:
    wallet = await open_wallet(payments)
    await top_up(payments, wallet, money)
    ticket = await stored_value_ticket(publisher, validator, wallet)
    return ticket.id, wallet


class TestCapsOnPaymentsLedger:
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(day=legs_of_a_day(max_legs=8), order=st.randoms(use_true_random=False))
    async def test_any_arrival_order_pays_the_uncapped_sum_up_to_the_cap(
        self,
        fares: FareWorker,
        ledger_db: asyncpg.Connection,
        publisher: Publisher,
        validator: Validator,
        payments: Any,
        day: list[Leg],
        order: Any,
    ) -> None:
        from tests.fares.test_ledger import hanoi_day_by_hand

        ticket, wallet = await rider(publisher, validator, payments, 200_000)
        legs = hanoi_legs(ticket, day)
        arrival = list(legs)
        order.shuffle(arrival)
        seen: list[Leg] = []
        for leg in arrival:
            await deliver(fares, accepted(ticket, wallet, leg))
            seen.append(leg)
            total = await paid(ledger_db, wallet)
            assert total == min(hanoi_day_by_hand(seen), DAY_CAP)
            assert total <= DAY_CAP
        # Offline gates upload again: every event redelivered moves no money.
        for leg in legs:
            await deliver(fares, accepted(ticket, wallet, leg))
        assert await paid(ledger_db, wallet) == min(hanoi_day_by_hand(legs), DAY_CAP)


class TestFareFigures:
    async def test_bus_transfer_inside_the_hour_costs_the_feeds_transfer_fare(
        self,
        fares: FareWorker,
        ledger_db: asyncpg.Connection,
        publisher: Publisher,
        validator: Validator,
        payments: Any,
    ) -> None:
        ticket, wallet = await rider(publisher, validator, payments, 100_000)
        first = Leg(str(uuid.uuid4()), "01", START, START)  # bus_medium: 10,000
        second = Leg(str(uuid.uuid4()), "09", START + 3600, START + 3600)  # inside: 5,000
        third = Leg(str(uuid.uuid4()), "09", START + 3 * 3600, START + 3 * 3600)  # 8,000
        for leg in (first, second, third):
            await deliver(fares, accepted(ticket, wallet, leg))
        assert await postings(ledger_db, wallet) == [
            ("charge", 10_000),
            ("charge", 5_000),
            ("charge", 8_000),
        ]
        statement = await fares.accounts.statement(ticket, fare_day(fares, START))
        assert [(leg["fare"], leg["transfer_discount"]) for leg in statement["legs"]] == [
            (10_000, 0),
            (8_000, 3_000),
            (8_000, 0),
        ]

    async def test_a_metro_trip_uploaded_late_makes_the_bus_a_transfer(
        self,
        fares: FareWorker,
        ledger_db: asyncpg.Connection,
        publisher: Publisher,
        validator: Validator,
        payments: Any,
    ) -> None:
        ticket, wallet = await rider(publisher, validator, payments, 100_000)
        bus = Leg(str(uuid.uuid4()), "09", START + 1800, START + 1800)  # 8,000 alone
        metro = Leg(str(uuid.uuid4()), "2A", START, START + 900, "2A-01", "2A-09")  # 13,000
        await deliver(fares, accepted(ticket, wallet, bus))
        await deliver(fares, accepted(ticket, wallet, metro))  # its gate was offline
        # The bus was boarded 15 min after the metro exit: 5,000, so the trip adds 10,000.
        assert await postings(ledger_db, wallet) == [("charge", 8_000), ("charge", 10_000)]

    async def test_a_capped_day_then_a_corrected_trip_refunds(
        self,
        fares: FareWorker,
        ledger_db: asyncpg.Connection,
        publisher: Publisher,
        validator: Validator,
        payments: Any,
    ) -> None:
        ticket, wallet = await rider(publisher, validator, payments, 100_000)
        entry = str(uuid.uuid4())
        # The sweeper closed a trip left open at 2A-01 at the line's longest fare (16,000).
        swept = Leg(entry, "2A", START, START + 3 * 3600)
        await deliver(fares, auto_closed(ticket, wallet, entry, "2A-01", swept))
        second = Leg(str(uuid.uuid4()), "2A", START + 14_400, START + 15_900, "2A-01", "2A-12")
        third = Leg(str(uuid.uuid4()), "2A", START + 30_000, START + 31_000, "2A-01", "2A-09")
        for leg in (second, third):  # 16,000 + 13,000: the day reaches its 40,000 cap
            await deliver(fares, accepted(ticket, wallet, leg))
        assert await paid(ledger_db, wallet) == DAY_CAP
        statement = await fares.accounts.statement(ticket, fare_day(fares, START))
        assert statement["capped_today"] is True
        assert [leg["capped"] for leg in statement["legs"]] == [0, 0, 5_000]
        assert (statement["day_total"], statement["day_cap"]) == (DAY_CAP, DAY_CAP)
        assert statement["legs"][0]["open_trip_entry"] == "2A-01"

        # The entry gate's offline upload shows the real exit, 2A-03 (8,000): 37,000 is owed.
        corrected = Leg(entry, "2A", START, START + 600, "2A-01", "2A-03")
        await deliver(fares, accepted(ticket, wallet, corrected))
        assert await postings(ledger_db, wallet) == [
            ("charge", 16_000),
            ("charge", 16_000),
            ("charge", 8_000),
            ("refund", 3_000),
        ]
        statement = await fares.accounts.statement(ticket, fare_day(fares, START))
        assert (statement["capped_today"], statement["day_total"]) == (False, 37_000)


class TestCapsAcrossVersions:
    async def test_a_days_cap_comes_from_the_version_in_force_that_fare_day(
        self,
        app: FastAPI,
        fares: FareWorker,
        ledger_db: asyncpg.Connection,
        publisher: Publisher,
        validator: Validator,
        payments: Any,
        tmp_path: Path,
    ) -> None:
        """The daily cap drops from 40,000 to 30,000 from Wednesday's fare day (04:00). Priced
        after the switch, Tuesday's legs are still capped at Tuesday's 40,000."""
        lower = edited(tmp_path, "citypass_fare_caps", "regular,,day,40000", "regular,,day,30000")
        wednesday = START - 3600 + 86_400  # Wednesday 04:00 in Hanoi
        versions = NetworkVersions(
            [
                *NetworkVersions.only(read_feed(), "v1"),
                NetworkVersion("v2", datetime.fromtimestamp(wednesday, UTC), "", read_feed(lower)),
            ]
        )
        worker = FareWorker(app.state.settings, validator.redis, app.state.outbox, lambda: versions)
        ticket, wallet = await rider(publisher, validator, payments, 200_000)
        try:
            for day_start in (START, wednesday + 3600):  # both 05:00
                for hour in (0, 4, 8):  # 2A-01 → 2A-12: 16,000 each
                    at = day_start + hour * 3600
                    leg = Leg(str(uuid.uuid4()), "2A", at, at + 1500, "2A-01", "2A-12")
                    await deliver(worker, accepted(ticket, wallet, leg))
            statements = [
                await worker.accounts.statement(ticket, fare_day(worker, at))
                for at in (START, wednesday + 3600)
            ]
        finally:
            await worker.close()

        assert [(s["day_total"], s["day_cap"]) for s in statements] == [
            (40_000, 40_000),
            (30_000, 30_000),
        ]
        assert await postings(ledger_db, wallet) == [
            ("charge", 16_000),
            ("charge", 16_000),
            ("charge", 8_000),
            ("charge", 16_000),
            ("charge", 14_000),
        ]


def auto_closed(ticket: str, wallet: str, entry_vid: str, station: str, leg: Leg) -> Event:
    return events.trip_auto_closed(
        ticket_id=ticket,
        entry_validation_id=entry_vid,
        entry_station=station,
        entered_at=leg.departed_at,
        closed_at=leg.arrived_at,
        fare=0,
        kind="stored_value",
        wallet_account_id=wallet,
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"closed/{entry_vid}")),
    )


def fare_day(fares: FareWorker, at: int) -> date:
    return fare_date(fares.versions().current().feed.tariff.fare_day(at))


class TestNeverTwice:
    async def test_a_worker_killed_between_saving_and_charging_charges_once(
        self,
        fares: FareWorker,
        app: FastAPI,
        ledger_db: asyncpg.Connection,
        publisher: Publisher,
        validator: Validator,
        payments: Any,
    ) -> None:
        ticket, wallet = await rider(publisher, validator, payments, 100_000)
        leg = Leg(str(uuid.uuid4()), "86", START, START)  # bus_express: 20,000
        event = accepted(ticket, wallet, leg)

        # A worker process saves the leg with its posting and is killed (SIGKILL) before
        # payments hears of it.
        settings = app.state.settings
        await killed_worker(settings, event, "post")
        assert await postings(ledger_db, wallet) == []
        pending = cast(dict[bytes, bytes], await validator.redis.hgetall(account_key(ticket)))
        [posting_field] = [name for name in pending if name.startswith(b"p:")]

        # Kafka redelivers the event to another worker: the saved posting goes out, once.
        await deliver(fares, event)
        assert await postings(ledger_db, wallet) == [("charge", 20_000)]
        assert posting_field not in await validator.redis.hgetall(account_key(ticket))

        # Another leg; its worker is killed after payments charged it but before the posting
        # left the account. The redelivery sends it again: payments posts it once.
        second = accepted(ticket, wallet, Leg(str(uuid.uuid4()), "86", START + 7200, START + 7200))
        await killed_worker(settings, second, "acknowledged")
        assert await postings(ledger_db, wallet) == [("charge", 20_000), ("charge", 20_000)]
        fares.accounts.forget(ticket)
        await deliver(fares, second)
        assert await postings(ledger_db, wallet) == [("charge", 20_000), ("charge", 20_000)]
        assert not [n for n in await validator.redis.hgetall(account_key(ticket)) if n[:2] == b"p:"]
        event = second
        # Two workers at once (a rebalance): both price it, one saves, payments posts once.
        other = FareWorker(app.state.settings, validator.redis, app.state.outbox, fares.versions)
        await asyncio.gather(deliver(fares, event), deliver(other, event))
        await other.close()
        assert await postings(ledger_db, wallet) == [("charge", 20_000), ("charge", 20_000)]


CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
import orjson
from services.validation.fare_worker import FareWorker
from shared.fares.feed import read_feed
from shared.fares.versions import NetworkVersions
from shared import redis as redis_kit
from shared.events import Event
from tests.validation.conftest import validation_settings

async def main() -> None:
    given = orjson.loads(sys.argv[1])
    settings = validation_settings(
        Path(given["tmp"]), redis_url=given["redis"], payments_url=given["payments"]
    )
    versions = NetworkVersions.only(read_feed(), "hanoi")
    worker = FareWorker(settings, redis_kit.connect(settings.redis_url), None, lambda: versions)

    async def die(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if given["die_at"] == "post":  # the account is saved; payments hears nothing
        worker.post = die
    else:  # payments has charged; the posting is still in the account
        worker.accounts.acknowledged = die
    event = Event(type=given["type"], source="/citypass/validation", subject=given["ticket"],
                  data=given["data"], id=given["id"])
    await worker.on_validation_event(event, None)

asyncio.run(main())
"""


async def killed_worker(settings: Any, event: Event, die_at: str) -> None:
    """A fare worker process handling `event`, killed with SIGKILL at `die_at`: `post` (the
    account is saved, nothing sent) or `acknowledged` (payments answered, the account still
    holds the posting)."""
    import sys
    import tempfile

    given = {
        "tmp": tempfile.mkdtemp(),
        "redis": settings.redis_url,
        "payments": settings.payments_url,
        "die_at": die_at,
        "type": event.type,
        "ticket": event.subject,
        "data": event.data,
        "id": event.id,
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, _json(given).decode(), cwd=str(Path(__file__).parents[2])
    )
    assert await child.wait() == -9


def _json(body: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(body)


class TestFareAccountRoute:
    async def test_services_read_a_tickets_fare_day_with_their_token(
        self,
        http: Any,
        fares: FareWorker,
        publisher: Publisher,
        validator: Validator,
        payments: Any,
    ) -> None:
        ticket, wallet = await rider(publisher, validator, payments, 50_000)
        await deliver(fares, accepted(ticket, wallet, Leg(str(uuid.uuid4()), "01", START, START)))
        day = fare_day(fares, START).isoformat()
        token = validator.settings.service_token.get_secret_value()

        refused = await http.get(f"/v1/tickets/{ticket}/fares?day={day}")
        assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token")
        wrong = await http.get(
            f"/v1/tickets/{ticket}/fares", headers={"Authorization": "Bearer admin?"}
        )
        assert wrong.status_code == 401
        bad_day = await http.get(
            f"/v1/tickets/{ticket}/fares?day=yesterday",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert bad_day.status_code == 422
        answer = await http.get(
            f"/v1/tickets/{ticket}/fares?day={day}", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200, answer.text
        account = answer.json()
        assert [(leg["route_id"], leg["fare"], leg["charged"]) for leg in account["legs"]] == [
            ("01", 10_000, 10_000)
        ]
        assert (account["day_total"], account["day_cap"], account["week_cap"]) == (
            10_000,
            40_000,
            160_000,
        )
        assert account["capped_today"] is False
