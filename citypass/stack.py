"""`citypass stack`: the whole platform on this machine, on real local servers.

`run` starts PostgreSQL, Valkey and Kafka (data under ./var/), creates topics, migrates, seeds
demo data, starts every service and waits until each answers /readyz. Ctrl-C stops it all.
`migrate`, `topics` and `seed` are the same steps alone, for docker-compose or external servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from citypass.servers import LocalServers, ManagedProcess, ServerStartError, port_in_use, spawn

ROOT = Path(__file__).resolve().parent.parent
console = Console(highlight=False)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    prefix: str
    port: int
    uses: tuple[str, ...]  # which stores it talks to
    module: str = ""  # services.<name> unless set
    settings: tuple[tuple[str, str], ...] = ()  # this process's own environment variables

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module or f"services.{self.name}"]


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("payments", "PAYMENTS", 8004, ("postgres", "kafka")),
    ServiceSpec("ticketing", "TICKETING", 8001, ("postgres", "kafka")),
    # The gates' process decides and does nothing else: fares, top-ups and the trip sweeper run
    # in FARE_WORKER, so that their work never queues in front of a gate request.
    ServiceSpec(
        "validation",
        "VALIDATION",
        8002,
        ("redis", "kafka"),
        settings=(("VALIDATION_RUN_FARE_WORKER", "false"), ("VALIDATION_RELAY_STANDBY", "true")),
    ),
    ServiceSpec("parking", "PARKING", 8003, ("postgres", "redis", "kafka")),
    ServiceSpec("operator", "OPERATOR", 8080, ("redis", "kafka")),
)
FARE_WORKER = ServiceSpec(
    "validation-fares",
    "VALIDATION",
    8012,
    ("redis", "kafka"),
    module="services.validation",
    settings=(("VALIDATION_RUN_FARE_WORKER", "true"),),
)
PROCESSES = (*SERVICES, FARE_WORKER)  # what `citypass stack run` starts

READY_TIMEOUT_S = 60.0


def service_environment(
    spec: ServiceSpec, database_url: str, redis_url: str, kafka: str, environment: str
) -> dict[str, str]:
    p = spec.prefix
    env = {
        f"{p}_ENVIRONMENT": environment,
        f"{p}_PORT": str(spec.port),
        f"{p}_DATABASE_URL": database_url,
        f"{p}_REDIS_URL": redis_url,
        f"{p}_KAFKA_BOOTSTRAP_SERVERS": kafka,
        **dict(spec.settings),
    }
    if spec.name in ("ticketing", "parking"):
        env[f"{p}_PAYMENTS_URL"] = "http://127.0.0.1:8004"
    return env


def merged(environments: dict[str, dict[str, str]]) -> dict[str, str]:
    """One environment for the seeders, which only need each service's stores."""
    env: dict[str, str] = {}
    for one in environments.values():
        env |= one
    return env


def operator_password(var: Path) -> str:
    """Generated on the first run and kept (0600) so that later runs print the same one."""
    path = var / "operator-admin-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


async def create_topics(bootstrap: str, replication_factor: int | None = None) -> None:
    from shared.kafka import ensure_topics

    await ensure_topics(bootstrap, replication_factor=replication_factor)


def migrate(database_url: str) -> None:
    from shared.migrations import upgrade_all

    upgrade_all(database_url)


async def seed_all(env: dict[str, str], admin_password: str) -> list[str]:
    from services.operator.seed import seed as seed_operator
    from services.operator.settings import OperatorSettings
    from services.parking.seed import seed as seed_parking
    from services.parking.settings import ParkingSettings
    from services.ticketing.seed import seed as seed_ticketing
    from services.ticketing.settings import TicketingSettings
    from services.validation.seed import seed as seed_validation
    from services.validation.settings import ValidationSettings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return [
            await seed_ticketing(TicketingSettings()),
            await seed_validation(ValidationSettings()),
            await seed_parking(ParkingSettings()),
            await seed_operator(OperatorSettings(), admin_password),
        ]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_ready(spec: ServiceSpec, managed: ManagedProcess, deadline: float) -> tuple[bool, str]:
    url = f"http://127.0.0.1:{spec.port}/readyz"
    reason = "no answer"
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if managed.process.poll() is not None:
                return False, f"exited with code {managed.process.returncode}"
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return True, "ready"
                reason = response.json().get("detail", response.text)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            time.sleep(0.2)
    return False, f"not ready after {READY_TIMEOUT_S:.0f} s: {reason}"


def run(args: argparse.Namespace) -> int:
    var = Path(args.var).resolve()
    var.mkdir(parents=True, exist_ok=True)
    servers = LocalServers(var, args.postgres_port, args.redis_port, args.kafka_port)
    processes: list[ManagedProcess] = []

    def request_stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # Explicit: a shell that starts us in the background makes us ignore SIGINT otherwise.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for spec in PROCESSES:
            if port_in_use(spec.port):
                raise ServerStartError(f"port {spec.port} for {spec.name} is already in use")
        with console.status("Starting…") as status:
            servers.start(lambda what: status.update(f"Starting {what}…"))
            console.print(
                f"[green]✓[/] PostgreSQL :{servers.postgres_port}  Valkey :{servers.redis_port}"
                f"  Kafka :{servers.kafka_port}   (data in {var})"
            )
            status.update("Creating Kafka topics…")
            asyncio.run(create_topics(servers.kafka_bootstrap))
            status.update("Migrating database schemas…")
            migrate(servers.database_url)
            console.print("[green]✓[/] topics created, schemas migrated")
            environments = {
                spec.name: service_environment(
                    spec,
                    servers.database_url,
                    servers.redis_url,
                    servers.kafka_bootstrap,
                    "development",
                )
                for spec in PROCESSES
            }
            status.update("Seeding demo data…")
            password = operator_password(var)
            seeded = asyncio.run(seed_all(merged(environments), password))
            console.print(f"[green]✓[/] seeded: {', '.join(seeded)}")
            for spec in PROCESSES:
                processes.append(
                    spawn(
                        spec.name,
                        spec.argv,
                        servers.log_dir / f"{spec.name}.log",
                        env={**os.environ, **environments[spec.name]},
                        cwd=ROOT,
                    )
                )
            deadline = time.monotonic() + READY_TIMEOUT_S
            for spec, managed in zip(PROCESSES, processes, strict=True):
                status.update(f"Waiting for {spec.name} to be ready…")
                ready, reason = wait_ready(spec, managed, deadline)
                if not ready:
                    raise ServerStartError(f"{spec.name} {reason}; see {managed.log_path}")
                console.print(f"[green]✓[/] {spec.name} ready on :{spec.port}")
        print_urls(password, servers)
        while True:
            for spec, managed in zip(PROCESSES, processes, strict=True):
                if managed.process.poll() is not None:
                    raise ServerStartError(
                        f"{spec.name} stopped (code {managed.process.returncode}); "
                        f"see {managed.log_path}"
                    )
            time.sleep(0.5)
    except ServerStartError as exc:
        console.print(f"[red]✗ {exc}[/]")
        return 1
    except Exception as exc:
        log_path = servers.log_dir / "stack.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as log:
            traceback.print_exc(file=log)
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        console.print(f"[red]✗ {type(exc).__name__}: {first_line}; see {log_path}[/]")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the orderly stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if processes or servers.processes:
            console.print("Stopping…")
        for managed in reversed(processes):
            managed.stop()
        servers.stop()
        console.print("Stopped.")


def rider_app_line() -> str:
    """Where the rider web app is, or how to get it built (the platform runs either way)."""
    from services.ticketing.webapp import DIST_DIR

    if (DIST_DIR / "index.html").is_file():
        return "Rider app (open on a phone): http://127.0.0.1:8001/app/"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return (
            "Rider app not built: install Node.js 18+ (apt-get install nodejs npm) and re-run"
            " make run"
        )
    return "Rider app not built: run make app (npm must reach the npm registry), then reload"


def print_urls(password: str, servers: LocalServers) -> None:
    table = Table(title="CityPass is running", show_lines=False)
    table.add_column("service")
    table.add_column("API docs")
    for spec in PROCESSES:
        table.add_row(spec.name, f"http://127.0.0.1:{spec.port}/docs")
    console.print(table)
    console.print(
        f"Operator dashboard: http://127.0.0.1:8080/   login [bold]admin[/] / [bold]{password}[/]"
    )
    console.print(rider_app_line())
    console.print(f"Logs: {servers.log_dir}/   Stop: Ctrl-C")


def migrate_command(args: argparse.Namespace) -> int:
    migrate(args.database_url)
    console.print("schemas migrated")
    return 0


def topics_command(args: argparse.Namespace) -> int:
    asyncio.run(create_topics(args.bootstrap, args.replication_factor))
    console.print("topics created")
    return 0


def seed_command(args: argparse.Namespace) -> int:
    environments = {
        spec.name: service_environment(
            spec, args.database_url, args.redis_url, args.bootstrap, "development"
        )
        for spec in PROCESSES
    }
    password = args.operator_password or secrets.token_urlsafe(12)
    for line in asyncio.run(seed_all(merged(environments), password)):
        console.print(f"seeded {line}")
    if not args.operator_password:
        console.print(f"operator login admin / {password}")
    return 0


def register(subparsers: Any) -> None:
    stack = subparsers.add_parser("stack", help="run the platform locally on real servers")
    commands = stack.add_subparsers(dest="stack_command", required=True)

    run_parser = commands.add_parser("run", help="start everything; Ctrl-C stops it")
    run_parser.add_argument("--var", default=str(ROOT / "var"), help="data and logs folder")
    run_parser.add_argument("--postgres-port", type=int, default=25432)
    run_parser.add_argument("--redis-port", type=int, default=26379)
    run_parser.add_argument("--kafka-port", type=int, default=29092)
    run_parser.set_defaults(func=run)

    env = os.environ.get
    migrate_parser = commands.add_parser("migrate", help="apply every service's migrations")
    migrate_parser.add_argument(
        "--database-url",
        default=env("CITYPASS_DATABASE_URL"),
        required=env("CITYPASS_DATABASE_URL") is None,
    )
    migrate_parser.set_defaults(func=migrate_command)

    topics_parser = commands.add_parser("topics", help="create every Kafka topic")
    topics_parser.add_argument(
        "--bootstrap",
        default=env("CITYPASS_KAFKA_BOOTSTRAP_SERVERS"),
        required=env("CITYPASS_KAFKA_BOOTSTRAP_SERVERS") is None,
    )
    topics_parser.add_argument(
        "--replication-factor",
        type=int,
        help="replicas per partition (default: the brokers that answer, at most 3)",
    )
    topics_parser.set_defaults(func=topics_command)

    seed_parser = commands.add_parser("seed", help="load the demo data (idempotent)")
    seed_parser.add_argument(
        "--database-url",
        default=env("CITYPASS_DATABASE_URL"),
        required=env("CITYPASS_DATABASE_URL") is None,
    )
    seed_parser.add_argument(
        "--redis-url", default=env("CITYPASS_REDIS_URL"), required=env("CITYPASS_REDIS_URL") is None
    )
    seed_parser.add_argument("--bootstrap", default=env("CITYPASS_KAFKA_BOOTSTRAP_SERVERS", ""))
    seed_parser.add_argument("--operator-password", default=env("CITYPASS_OPERATOR_PASSWORD"))
    seed_parser.set_defaults(func=seed_command)


def main() -> int:
    parser = argparse.ArgumentParser(prog="citypass stack")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stack", *sys.argv[1:]])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
