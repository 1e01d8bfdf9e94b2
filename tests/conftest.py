"""Real PostgreSQL, Valkey and Kafka for the whole test session (one set per xdist worker)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import settings

from citypass.servers import LocalServers, free_port
from shared.migrations import upgrade_all

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# No per-example deadline: it is a timing assertion, and fails on a busy 2-core machine.
settings.register_profile("citypass", deadline=None)
settings.load_profile("citypass")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServers]:
    root = tmp_path_factory.mktemp("servers")
    local = LocalServers(root, free_port(), free_port(), free_port())
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def migrated(servers: LocalServers) -> LocalServers:
    """Every service schema at its latest migration."""
    upgrade_all(servers.database_url)
    return servers


@pytest.fixture(scope="session")
def service_env(migrated: LocalServers) -> dict[str, str]:
    """The environment a service process would get from `make run`, pointing at test servers."""
    servers = migrated
    env: dict[str, str] = {}
    for prefix in ("PAYMENTS", "TICKETING", "VALIDATION", "PARKING", "OPERATOR"):
        env[f"{prefix}_ENVIRONMENT"] = "test"
        env[f"{prefix}_DATABASE_URL"] = servers.database_url
        env[f"{prefix}_REDIS_URL"] = servers.redis_url
        env[f"{prefix}_KAFKA_BOOTSTRAP_SERVERS"] = servers.kafka_bootstrap
    return env


@pytest.fixture(scope="session")
def configured(service_env: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in service_env}
    os.environ.update(service_env)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="session")
def app_client(configured: None) -> AppClient:
    """Run an app's lifespan (workers included) and talk to it in-process."""

    @asynccontextmanager
    async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://testserver", timeout=30
            ) as http,
        ):
            yield http

    return client


@pytest.fixture
def one_browser_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Browser tests hold this across test workers: two Chromiums on two cores starve the
    services under test, and the dashboard test measures a 2 s freshness budget."""
    shared = tmp_path_factory.getbasetemp().parent  # the same folder for every xdist worker
    with (shared / "browser.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
