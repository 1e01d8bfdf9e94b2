"""Network and fare versions through ticketing's API on real servers: import (good and every
kind of bad), the feed back out, a version switching prices at its instant, and NetworkSync
(what the other services run) against this ticketing."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from citypass import cli
from citypass.servers import LocalServers
from services.ticketing.seed import FIRST_VERSION_FROM, seed
from services.ticketing.settings import TicketingSettings
from shared.db import Database
from shared.fares.feed import HANOI, read_feed
from shared.fares.versions import NetworkSync
from tests.fares.support import edited, hanoi_copy
from tests.fares.test_roundtrip import every_price
from tests.support import ServiceProcess, running_service, wait_until
from tests.ticketing.conftest import (
    OPERATOR,
    OPERATOR_TOKEN,
    PAYMENTS_TOKEN,
    balance,
    buy,
    fund,
    new_key,
    publish,
    scalar,
    sign_up,
    with_product,
    zipped,
)


async def version_count(ticketing_db: Database) -> int:
    return int(await scalar(ticketing_db, "SELECT count(*) FROM network_versions"))


async def product_price(http: httpx.AsyncClient, code: str) -> int:
    response = await http.get(f"/v1/products/{code}")
    assert response.status_code == 200, response.text
    price: int = response.json()["price_vnd"]
    return price


def dearer_metro_day(target: Path, price: int) -> Path:
    feed = hanoi_copy(target)
    path = feed / "fare_products.txt"
    path.write_text(path.read_text(encoding="utf-8").replace(",40000,VND", f",{price},VND"))
    return feed


@pytest.fixture(scope="module")
def ticketing_process(
    migrated: LocalServers, service_env: dict[str, str], payments_process: ServiceProcess
) -> Iterator[ServiceProcess]:
    """A second ticketing replica, as its own process, reading the version list every 0.2 s."""
    env = {
        **service_env,
        "TICKETING_PAYMENTS_URL": payments_process.url,
        "TICKETING_PAYMENTS_SERVICE_TOKEN": PAYMENTS_TOKEN,
        "TICKETING_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "TICKETING_NETWORK_REFRESH_INTERVAL": "PT0.2S",
    }
    log_path = migrated.log_dir / "ticketing-tests-network-replica.log"
    with running_service("ticketing", env, log_path) as process:
        yield process


@pytest.fixture
async def hanoi_back(http: httpx.AsyncClient) -> Any:
    """Hanoi's feed in force again after a test that published another one."""
    yield
    assert (await publish(http, zipped(HANOI))).status_code == 201


class TestImport:
    async def test_a_good_feed_is_stored_and_listed(
        self, http: httpx.AsyncClient, ticketing_db: Database, hanoi_back: None
    ) -> None:
        start = datetime.now(UTC) + timedelta(days=400)
        response = await publish(http, zipped(HANOI), effective_from=start)
        assert response.status_code == 201, response.text
        version = response.json()
        assert datetime.fromisoformat(version["effective_from"]) == start
        assert version["summary"]["feed_version"] == "hanoi-2026.12"
        assert version["summary"]["currency"] == "VND"
        assert version["summary"]["products_on_sale"] == 16
        listing = (await http.get("/v1/network/versions")).json()["versions"]
        assert listing[-1]["id"] == version["id"]
        assert [v["effective_from"] for v in listing] == sorted(
            v["effective_from"] for v in listing
        )
        feed = await http.get(f"/v1/network/versions/{version['id']}/feed")
        assert feed.headers["content-type"] == "application/zip"
        assert hashlib.sha256(feed.content).hexdigest() == version["sha256"]

    async def test_the_same_feed_at_the_same_instant_is_the_same_version(
        self, http: httpx.AsyncClient, ticketing_db: Database, hanoi_back: None
    ) -> None:
        start = datetime.now(UTC) + timedelta(days=500, microseconds=7)
        first = await publish(http, zipped(HANOI), effective_from=start)
        count = await version_count(ticketing_db)
        again = await publish(http, zipped(HANOI), effective_from=start)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        assert await version_count(ticketing_db) == count
        other = with_product(hanoi_copy(Path(f"/tmp/{uuid.uuid4()}")), "TEST-OTHER", 1_000)
        taken = await publish(http, zipped(other), effective_from=start)
        assert (taken.status_code, taken.json()["code"]) == (409, "effective_from_taken")

    async def test_a_retry_with_the_same_key_replays_the_first_answer(
        self, http: httpx.AsyncClient, ticketing_db: Database, hanoi_back: None
    ) -> None:
        headers = {**OPERATOR, "Idempotency-Key": new_key(), "Content-Type": "application/zip"}
        body = zipped(HANOI)
        first = await http.post("/v1/network/versions", content=body, headers=headers)
        count = await version_count(ticketing_db)
        again = await http.post("/v1/network/versions", content=body, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert await version_count(ticketing_db) == count

    async def test_a_version_cannot_start_in_the_past(
        self, http: httpx.AsyncClient, ticketing_db: Database
    ) -> None:
        count = await version_count(ticketing_db)
        past = datetime.now(UTC) - timedelta(minutes=5)
        response = await publish(http, zipped(HANOI), effective_from=past)
        assert response.status_code == 409
        assert response.json()["code"] == "effective_from_in_past"
        assert await version_count(ticketing_db) == count

    async def test_only_operators_import(self, http: httpx.AsyncClient) -> None:
        headers = {"Idempotency-Key": new_key(), "Content-Type": "application/zip"}
        response = await http.post("/v1/network/versions", content=zipped(HANOI), headers=headers)
        assert response.status_code == 401
        wrong = {**headers, "Authorization": "Bearer not-the-operator"}
        response = await http.post("/v1/network/versions", content=zipped(HANOI), headers=wrong)
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"


def bad_feeds(root: Path) -> dict[str, tuple[bytes, tuple[str, int, str]]]:
    """Every kind of bad feed, with one problem (file, line, field) it must be refused for."""
    rules = (HANOI / "fare_leg_rules.txt").read_text(encoding="utf-8")
    overlap = rules + "bus,bus_short,,,,,BUS-SINGLE-MEDIUM,0\n"
    latin = hanoi_copy(root / "latin")
    stops = (latin / "stops.txt").read_bytes()
    (latin / "stops.txt").write_bytes(stops.replace("Cát".encode(), b"C\xe1t"))
    return {
        "missing file": (
            zipped(hanoi_copy(root / "missing", fare_leg_rules="")),
            ("fare_leg_rules.txt", 0, ""),
        ),
        "dangling reference": (
            zipped(edited(root / "dangling", "route_networks", "metro,3", "metro,3X")),
            ("route_networks.txt", 3, "route_id"),
        ),
        "overlapping leg rules": (
            zipped(hanoi_copy(root / "overlap", fare_leg_rules=overlap)),
            ("fare_leg_rules.txt", len(rules.splitlines()) + 1, "fare_product_id"),
        ),
        "negative amount": (
            zipped(edited(root / "negative", "fare_products", ",40000,VND", ",-40000,VND")),
            ("fare_products.txt", 47, "amount"),
        ),
        "bad date": (
            zipped(edited(root / "date", "calendar", "20271231", "20270230")),
            ("calendar.txt", 2, "end_date"),
        ),
        "another currency": (
            zipped(edited(root / "currency", "citypass_fare_caps", ",VND", ",USD")),
            ("citypass_fare_caps.txt", 2, "currency"),
        ),
        "not a zip": (b"stop_id,stop_name\n2A-01,Cat Linh\n", ("", 0, "")),
        "not UTF-8": (zipped(latin), ("stops.txt", 0, "")),
    }


class TestBadFeeds:
    async def test_every_kind_is_refused_with_its_problems_and_nothing_stored(
        self, http: httpx.AsyncClient, ticketing_db: Database, tmp_path: Path
    ) -> None:
        count = await version_count(ticketing_db)
        listing = (await http.get("/v1/network/versions")).json()
        for kind, (body, (file, line, field)) in bad_feeds(tmp_path).items():
            response = await publish(http, body)
            assert response.status_code == 422, kind
            assert response.headers["content-type"] == "application/problem+json", kind
            problem = response.json()
            assert problem["code"] == "invalid_feed", kind
            found = {(p["file"], p["line"], p["field"]) for p in problem["problems"]}
            assert (file, line, field) in found, (kind, problem["problems"])
            assert all(p["message"] for p in problem["problems"]), kind
        assert await version_count(ticketing_db) == count
        assert (await http.get("/v1/network/versions")).json() == listing


class TestRoundTrip:
    async def test_the_feed_exported_and_imported_again_prices_the_same(
        self, http: httpx.AsyncClient, hanoi_back: None
    ) -> None:
        listing = (await http.get("/v1/network/versions")).json()["versions"]
        now = datetime.now(UTC)
        in_force = [v for v in listing if datetime.fromisoformat(v["effective_from"]) <= now][-1]
        exported = (await http.get(f"/v1/network/versions/{in_force['id']}/feed")).content
        assert every_price(read_feed(exported)) == every_price(read_feed(HANOI))
        again = await publish(http, exported)
        assert again.status_code == 201, again.text
        assert again.json()["sha256"] == in_force["sha256"] == hashlib.sha256(exported).hexdigest()
        products = (await http.get("/v1/products")).json()
        assert {p["code"]: p["price_vnd"] for p in products}["METRO-DAY"] == 40_000


class TestVersionSwitch:
    async def test_a_version_published_ahead_prices_from_its_start_without_restart(
        self,
        http: httpx.AsyncClient,
        payments_http: httpx.AsyncClient,
        ticketing_process: ServiceProcess,
        tmp_path: Path,
        hanoi_back: None,
    ) -> None:
        """Both replicas: this one (which took the import) and a ticketing process that only
        reads the table every 0.2 s."""
        start = datetime.now(UTC) + timedelta(seconds=4)
        dearer = zipped(dearer_metro_day(tmp_path / "dearer", 45_000))
        assert (await publish(http, dearer, effective_from=start)).status_code == 201
        async with httpx.AsyncClient(base_url=ticketing_process.url) as other:
            assert await product_price(http, "METRO-DAY") == 40_000
            assert await product_price(other, "METRO-DAY") == 40_000

            async def switched() -> bool:
                return await product_price(http, "METRO-DAY") == 45_000

            await wait_until(switched, timeout_s=20)
            assert datetime.now(UTC) >= start
            assert await product_price(other, "METRO-DAY") == 45_000
        rider = await sign_up(http)
        await fund(http, payments_http, rider, 100_000)
        bought = await buy(http, rider, "METRO-DAY")
        assert bought.status_code == 201, bought.text
        assert bought.json()["price_vnd"] == 45_000
        assert await balance(http, rider) == 55_000


class CountingTransport(httpx.AsyncBaseTransport):
    """Every request's path, and (when `tamper`) a feed whose last byte was changed."""

    def __init__(self, tamper: bool = False) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []
        self.tamper = tamper

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        response = await self.inner.handle_async_request(request)
        if not (self.tamper and request.url.path.endswith("/feed")):
            return response
        body = await response.aread()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body[:-1] + bytes([body[-1] ^ 1]),
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class TestNetworkSync:
    """What validation, the fare worker and operator run, against a ticketing process."""

    async def test_a_new_version_is_fetched_once_and_an_unchanged_list_costs_one_get(
        self,
        http: httpx.AsyncClient,
        ticketing_process: ServiceProcess,
        tmp_path: Path,
        hanoi_back: None,
    ) -> None:
        transport = CountingTransport()
        changes: list[int] = []
        async with httpx.AsyncClient(base_url=ticketing_process.url, transport=transport) as client:
            sync = NetworkSync(client, currency="VND", on_change=lambda v: changes.append(len(v)))
            held = await sync.refresh()
            assert transport.paths[0] == "/v1/network/versions"
            assert len(transport.paths) == 1 + len(held)  # the list, then each feed once
            assert held.at(datetime.now(UTC)).feed.products
            transport.paths.clear()
            assert await sync.refresh() is held
            assert transport.paths == ["/v1/network/versions"]

            start = datetime.now(UTC) + timedelta(days=600)
            dearer = zipped(dearer_metro_day(tmp_path / "dearer", 50_000))
            created = (await publish(http, dearer, effective_from=start)).json()
            transport.paths.clear()
            now_held = await sync.refresh()
            assert transport.paths == [
                "/v1/network/versions",
                f"/v1/network/versions/{created['id']}/feed",
            ]
            assert now_held.at(start).id == created["id"]
            day_pass = next(p for p in now_held.at(start).feed.products if p.code == "METRO-DAY")
            assert day_pass.price == 50_000
            assert changes == [len(held), len(held) + 1]

    async def test_a_feed_that_does_not_match_its_digest_is_refused(
        self, ticketing_process: ServiceProcess
    ) -> None:
        transport = CountingTransport(tamper=True)
        async with httpx.AsyncClient(base_url=ticketing_process.url, transport=transport) as client:
            sync = NetworkSync(client, currency="VND")
            with pytest.raises(ValueError, match="digest mismatch"):
                await sync.refresh()
            assert len(sync.versions) == 0


class TestCommandLine:
    async def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, ["network", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    async def test_import_list_and_export_round_trip(
        self,
        capsys: pytest.CaptureFixture[str],
        ticketing_process: ServiceProcess,
        tmp_path: Path,
        hanoi_back: None,
    ) -> None:
        url = ["--url", ticketing_process.url]
        start = (datetime.now(UTC) + timedelta(days=700)).isoformat()
        dearer = dearer_metro_day(tmp_path / "dearer", 42_000)
        code, out, err = await self.run(
            capsys,
            *url,
            "import",
            str(dearer),
            "--effective-from",
            start,
            "--token",
            OPERATOR_TOKEN,
        )
        assert code == 0, err
        version_id = out.split()[1]
        code, out, _ = await self.run(capsys, *url, "versions")
        assert version_id in out.splitlines()[-1]
        assert sum(line.startswith("*") for line in out.splitlines()) == 1  # one in force

        code, _, err = await self.run(
            capsys, *url, "export", str(tmp_path / "out"), "--version", version_id
        )
        assert code == 0, err
        code, _, err = await self.run(
            capsys, *url, "export", str(tmp_path / "out.zip"), "--version", version_id
        )
        assert code == 0, err
        exported = read_feed(tmp_path / "out")
        assert every_price(exported) == every_price(read_feed(dearer))
        day_pass = next(p for p in exported.products if p.code == "METRO-DAY")
        assert day_pass.price == 42_000
        async with httpx.AsyncClient(base_url=ticketing_process.url) as client:
            listing = (await client.get("/v1/network/versions")).json()["versions"]
        sha = next(v["sha256"] for v in listing if v["id"] == version_id)
        assert hashlib.sha256((tmp_path / "out.zip").read_bytes()).hexdigest() == sha

        # The exported directory imported again (at another instant) is the same feed.
        later = (datetime.now(UTC) + timedelta(days=701)).isoformat()
        code, out, err = await self.run(
            capsys,
            *url,
            "import",
            str(tmp_path / "out"),
            "--effective-from",
            later,
            "--token",
            OPERATOR_TOKEN,
        )
        assert code == 0, err
        assert f"sha256 {sha}" in out

    async def test_a_bad_feed_prints_its_problems_one_a_line(
        self,
        capsys: pytest.CaptureFixture[str],
        ticketing_process: ServiceProcess,
        ticketing_db: Database,
        tmp_path: Path,
    ) -> None:
        count = await version_count(ticketing_db)
        feed = edited(tmp_path / "bad", "fare_products", ",40000,VND", ",-40000,VND")
        text = (feed / "fare_leg_rules.txt").read_text(encoding="utf-8")
        (feed / "fare_leg_rules.txt").write_text(text.replace(",metro,2A-01,", ",metro9,2A-01,", 1))
        code, _, err = await self.run(
            capsys, "--url", ticketing_process.url, "import", str(feed), "--token", OPERATOR_TOKEN
        )
        assert code == 1
        lines = err.splitlines()
        assert lines[0].startswith("invalid_feed: ")
        assert "fare_products.txt:47: amount: '-40000' is negative" in lines[1:]
        assert any(line.startswith("fare_leg_rules.txt:2: network_id: ") for line in lines[1:])
        assert await version_count(ticketing_db) == count


class TestSeed:
    async def test_hanoi_is_the_first_version_and_a_second_seed_keeps_the_versions(
        self, http: httpx.AsyncClient, ticketing_db: Database, migrated: LocalServers
    ) -> None:
        first = (await http.get("/v1/network/versions")).json()["versions"][0]
        assert datetime.fromisoformat(first["effective_from"]) == FIRST_VERSION_FROM
        assert first["summary"]["feed_version"] == "hanoi-2026.12"
        count = await version_count(ticketing_db)
        settings = TicketingSettings(database_url=migrated.database_url)
        assert await seed(settings) == "network versions kept"
        assert await version_count(ticketing_db) == count

    async def test_an_unknown_version_has_no_feed(self, http: httpx.AsyncClient) -> None:
        response = await http.get(f"/v1/network/versions/{uuid.uuid4()}/feed")
        assert response.status_code == 404
        assert response.json()["code"] == "network_version_not_found"


class TestNetworkInForce:
    async def test_the_rider_app_gets_lines_and_stations_of_the_version_in_force(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.get("/v1/network")
        assert response.status_code == 200, response.text
        network = response.json()
        assert (network["currency"], network["timezone"]) == ("VND", "Asia/Ho_Chi_Minh")
        lines = {line["id"]: line["mode"] for line in network["lines"]}
        assert lines == {
            "2A": "metro",
            "3": "metro",
            "01": "bus",
            "09": "bus",
            "32": "bus",
            "86": "bus",
        }
        stations = {s["id"]: (s["name"], s["lines"]) for s in network["stations"]}
        assert stations["2A-01"] == ("Cát Linh", ["2A"])
        assert sum(lines_ == ["2A"] for _, lines_ in stations.values()) == 12
