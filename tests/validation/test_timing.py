"""One admission per QR on every time path: the used-marker outlives every acceptance.

The property holds the service's own acceptance rules (services/validation/timing.py, the
functions the gate path and the upload path call) against the lifetimes derived from them,
over every time parameter; the tests after it check what the real script leaves in Redis and
replay the attacks that used to work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from citypass.servers import LocalServers
from services.validation import repository
from services.validation.app import build_app
from services.validation.service import Validator
from services.validation.timing import Tolerances
from tests.conftest import AppClient
from tests.support import read_events
from tests.validation.conftest import make_ticket, provision_gate, scan, validation_settings
from tests.validation.test_offline import offline_gate, upload

tolerances = st.builds(
    Tolerances,
    qr_window_s=st.integers(1, 3_600),
    qr_skew_s=st.integers(0, 600),
    request_window_s=st.integers(1, 3_600),
    scan_lag_s=st.integers(0, 86_400),
    upload_horizon_s=st.integers(0, 30 * 86_400),
    clock_tolerance_s=st.integers(0, 600),
)
AT = 1_800_000_000


class TestMarkersOutliveEveryAcceptance:
    @given(
        t=tolerances,
        scanned_offset=st.integers(-40 * 86_400, 40 * 86_400),
        now_offset=st.integers(-40 * 86_400, 40 * 86_400),
        lag=st.floats(-1, 1),
    )
    def test_online(self, t: Tolerances, scanned_offset: int, now_offset: int, lag: float) -> None:
        """Whatever scan time a gate claims, whenever a process (whose clock may be off from
        Redis's by up to the clock tolerance) accepts a code, its marker is still there."""
        now = AT + now_offset
        if t.accepts_online(AT, AT + scanned_offset, now):
            redis_now = now + lag * t.clock_tolerance_s
            assert redis_now < t.marker_expires_at(AT)

    @given(t=tolerances, now_offset=st.integers(-40 * 86_400, 40 * 86_400), lag=st.floats(-1, 1))
    def test_upload(self, t: Tolerances, now_offset: int, lag: float) -> None:
        now = AT + now_offset
        if t.accepts_upload(AT, now):
            assert now + lag * t.clock_tolerance_s < t.marker_expires_at(AT)

    @given(
        t=tolerances,
        first=st.integers(-7_200, 7_200),
        again=st.integers(-7_200, 7_200),
        lags=st.tuples(st.floats(-1, 1), st.floats(-1, 1)),
    )
    def test_request_nonce(
        self, t: Tolerances, first: int, again: int, lags: tuple[float, float]
    ) -> None:
        """A signed gate request is accepted while its timestamp is within the window of the
        deciding process's clock; its nonce, claimed at the first use, outlives a second."""
        stamp = AT
        first_at, again_at = stamp + first, stamp + again
        if again_at > first_at and all(
            abs(moment - stamp) <= t.request_window_s for moment in (first_at, again_at)
        ):
            # Each moment is a process clock; Redis's is within the tolerance of each.
            claimed = first_at + lags[0] * t.clock_tolerance_s
            replayed = again_at + lags[1] * t.clock_tolerance_s
            assert replayed < claimed + t.nonce_ttl_s


class TestTheScriptUsesThem:
    async def test_an_accepted_code_is_marked_until_its_last_acceptance(
        self, http: httpx.AsyncClient, validator: Validator
    ) -> None:
        gate = await provision_gate(http, station="2A-02", direction="entry")
        ticket = make_ticket()
        at = int(time.time())
        assert (await scan(http, gate, ticket.qr(at=at)))["decision"] == "accept"

        marker = repository.qr_used_key(ticket.id, at, 1)
        expires = await validator.redis.expiretime(marker)

        t = validator.tolerances
        assert expires >= at + t.online_horizon_s + t.clock_tolerance_s
        assert expires >= at + t.upload_horizon_s + t.clock_tolerance_s


@pytest.fixture
async def short_window(
    app_client: AppClient,
    tmp_path: Path,
    http: httpx.AsyncClient,  # the session app has learnt the pass products (in Redis)
) -> AsyncIterator[httpx.AsyncClient]:
    """A validation app whose QR window is short and whose gates may report scans from a
    slow link 20 s late: the old marker lifetime (window + 2 skew + 10 s) ended after 11 s."""
    settings = validation_settings(
        tmp_path,
        qr_window=timedelta(seconds=1),
        qr_skew=timedelta(seconds=0),
        device_window=timedelta(seconds=20),
        scan_lag=timedelta(seconds=20),
        run_fare_worker=False,
    )
    app: FastAPI = build_app(settings)
    async with app_client(app) as client:
        yield client


class TestReplays:
    async def test_a_used_code_is_refused_at_another_gate_with_a_scan_time_in_the_past(
        self, short_window: httpx.AsyncClient
    ) -> None:
        """The outside review's attack: a used QR admitted again later at another gate whose
        request said the code was scanned long ago (queued on a slow link). Two bus routes: a
        pass may board both, so only the one-time rule stands between the QR and a second
        admission."""
        north = await provision_gate(short_window, route="09")
        south = await provision_gate(short_window, route="32")
        ticket = make_ticket(product="BUS-MONTH-ALL")
        at = int(time.time())
        qr = ticket.qr(at=at)
        first = await scan(short_window, north, qr, datetime.fromtimestamp(at, UTC))
        await asyncio.sleep(12)  # past the old marker lifetime, within the scan lag

        again = await scan(short_window, south, qr, datetime.fromtimestamp(at, UTC))

        assert first["decision"] == "accept"
        assert (again["decision"], again["reason"]) == ("reject", "replayed")

    async def test_a_code_uploaded_by_an_offline_gate_is_refused_online_after(
        self, http: httpx.AsyncClient
    ) -> None:
        offline = await provision_gate(http, route="01")
        online = await provision_gate(http, route="86")
        gate = await offline_gate(http, offline)
        qr = make_ticket(product="BUS-MONTH-ALL").qr()
        assert gate.decide(qr).decision == "accept"
        assert (await upload(http, offline, gate))["recorded"] == 1

        again = await scan(http, online, qr)

        assert (again["decision"], again["reason"]) == ("reject", "replayed")

    async def test_an_upload_after_the_horizon_changes_nothing_and_is_reported(
        self, http: httpx.AsyncClient, validator: Validator, servers: LocalServers
    ) -> None:
        offline = await provision_gate(http, station="2A-10", direction="entry")
        gate = await offline_gate(http, offline)
        long_ago = int(time.time()) - validator.tolerances.upload_horizon_s - 60
        ticket = make_ticket(valid_from=long_ago - 86_400)
        stale = ticket.qr(at=long_ago)
        assert gate.decide(stale, now=long_ago).decision == "accept"

        result = await upload(http, offline, gate)

        assert (result["too_late"], result["recorded"]) == (1, 0)
        assert result["results"][0]["status"] == "too_late"
        assert not await validator.redis.exists(repository.ticket_key(ticket.id))
        alerts = await read_events(
            servers.kafka_bootstrap,
            "ops.alerts",
            lambda e: e.data.get("validation_id") == result["results"][0]["validation_id"],
            1,
        )
        assert alerts[0][0].data["code"] == "offline_upload_too_late"
