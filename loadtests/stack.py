"""A benchmark's own stack on this machine: real PostgreSQL, Valkey and Kafka in a temporary
directory, every schema migrated, services as real uvicorn processes, and the bank that pays
their top-ups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import httpx

from citypass.bank import bank_notification, signed_headers
from citypass.servers import LocalServers, ManagedProcess, free_port, spawn
from shared import vietqr
from shared.migrations import upgrade_all

ROOT = Path(__file__).resolve().parent.parent


async def wait_ready(url: str, process: ManagedProcess, timeout_s: float = 60) -> None:
    """Until `url` answers /readyz; raises at once if the process exits."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while time.monotonic() < deadline:
            if process.process.poll() is not None:
                raise RuntimeError(f"{process.name} exited; see {process.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{process.name} not ready after {timeout_s} s; see {process.log_path}")


@contextlib.asynccontextmanager
async def local_services(
    names: Sequence[str],
    settings: Callable[[Mapping[str, str]], Mapping[str, str]],
    *,
    workdir_prefix: str,
) -> AsyncIterator[dict[str, str]]:
    """Real servers, then `python -m services.<name>` for each name in order, each ready before
    the next; yields their URLs by name. Every service runs in development on a free port with
    WARNING logs; `settings(urls)` gives the rest of their environment."""
    with tempfile.TemporaryDirectory(prefix=workdir_prefix) as workdir:
        servers = LocalServers(Path(workdir), free_port(), free_port(), free_port())
        processes: list[ManagedProcess] = []
        try:
            await asyncio.to_thread(servers.start)
            await asyncio.to_thread(upgrade_all, servers.database_url)
            ports = {name: free_port() for name in names}
            urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            env = {**os.environ}
            for name, port in ports.items():
                prefix = name.upper()
                env |= {
                    f"{prefix}_ENVIRONMENT": "development",
                    f"{prefix}_PORT": str(port),
                    f"{prefix}_DATABASE_URL": servers.database_url,
                    f"{prefix}_REDIS_URL": servers.redis_url,
                    f"{prefix}_KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap,
                    f"{prefix}_LOG_LEVEL": "WARNING",
                }
            env |= settings(urls)
            for name in names:
                process = spawn(
                    name,
                    [sys.executable, "-m", f"services.{name}"],
                    Path(workdir) / "logs" / f"{name}.log",
                    env=env,
                    cwd=ROOT,
                    stop_signal=signal.SIGINT,
                )
                processes.append(process)
                await wait_ready(urls[name], process)
            yield urls
        finally:
            for process in reversed(processes):
                await asyncio.to_thread(process.stop)
            await asyncio.to_thread(servers.stop)


async def bank_pays_topup(
    payments: httpx.AsyncClient, qr: str, amount: int, webhook_secret: str
) -> None:
    """The bank pays the top-up's VietQR `qr` (`amount` VND) and sends its signed
    notification, as `citypass bank pay` does; raises unless payments credited it."""
    body = bank_notification(vietqr.decode(qr), amount).model_dump_json().encode()
    paid = await payments.post(
        "/v1/bank/notifications", content=body, headers=signed_headers(webhook_secret, body)
    )
    if paid.is_error or paid.json()["outcome"] != "credited":
        raise RuntimeError(f"the top-up was not credited: {paid.text}")
