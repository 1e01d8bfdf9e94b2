"""`citypass network`: the network and its fares as GTFS feeds, versioned by ticketing.

  citypass network import FEED [--effective-from 2027-01-01T04:00:00+07:00]
                                  a directory or a zip; checked whole, stored as a new version
  citypass network export TARGET [--version ID]
                                  the version in force (or ID) as a directory, or a .zip
  citypass network versions       every version, oldest first, and which one is in force

Importing needs the operators' token (`--token` or $TICKETING_OPERATOR_TOKEN; the development
default otherwise). A refused feed prints one problem a line (file:line: field: message) and
exits with 1; nothing is stored.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from shared.fares.reader import Problem

DEFAULT_URL = "http://127.0.0.1:8001"


class NetworkError(Exception):
    pass


def feed_bytes(feed: Path) -> bytes:
    """A zip's bytes, or a directory's `.txt` files zipped."""
    if feed.is_file():
        return feed.read_bytes()
    if not feed.is_dir():
        raise NetworkError(f"{feed}: no such directory or zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(feed.glob("*.txt")):
            archive.write(path, path.name)
    return buffer.getvalue()


def _client(args: argparse.Namespace) -> httpx.Client:
    url = args.url or os.environ.get("CITYPASS_TICKETING_URL") or DEFAULT_URL
    return httpx.Client(base_url=url, timeout=60)


def _operator_token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    from services.ticketing.settings import TicketingSettings

    return TicketingSettings().operator_token.get_secret_value()


def _refusal(response: httpx.Response) -> NetworkError:
    try:
        problem: dict[str, Any] = response.json()
    except ValueError:
        return NetworkError(f"HTTP {response.status_code}: {response.text[:200]}")
    lines = [f"{problem.get('code', response.status_code)}: {problem.get('detail', '')}"]
    lines += [str(Problem(**p)) for p in problem.get("problems", [])]
    return NetworkError("\n".join(lines))


def import_command(args: argparse.Namespace) -> int:
    data = feed_bytes(Path(args.feed))
    params = {"effective_from": args.effective_from} if args.effective_from else {}
    headers = {
        "Authorization": f"Bearer {_operator_token(args)}",
        "Idempotency-Key": str(uuid.uuid4()),
        "Content-Type": "application/zip",
    }
    with _client(args) as client:
        response = client.post("/v1/network/versions", content=data, params=params, headers=headers)
    if response.status_code not in (200, 201):
        raise _refusal(response)
    version = response.json()
    known = "already imported: " if response.status_code == 200 else ""
    summary = ", ".join(f"{k} {v}" for k, v in version["summary"].items())
    print(f"{known}version {version['id']} from {version['effective_from']}")
    print(f"  sha256 {version['sha256']}")
    print(f"  {summary}")
    return 0


def _versions(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/v1/network/versions")
    if response.status_code != 200:
        raise _refusal(response)
    versions: list[dict[str, Any]] = response.json()["versions"]
    return versions


def in_force(versions: list[dict[str, Any]], at: datetime) -> dict[str, Any] | None:
    started = [v for v in versions if datetime.fromisoformat(v["effective_from"]) <= at]
    return started[-1] if started else None


def versions_command(args: argparse.Namespace) -> int:
    with _client(args) as client:
        versions = _versions(client)
    current = in_force(versions, datetime.now(UTC))
    for version in versions:
        mark = "*" if version is current else " "
        summary = version["summary"]
        print(
            f"{mark} {version['id']}  from {version['effective_from']}  "
            f"{summary.get('feed_version') or '-'}  sha256 {version['sha256'][:12]}"
        )
    if not versions:
        print("no version yet: citypass network import FEED")
    return 0


def export_command(args: argparse.Namespace) -> int:
    target = Path(args.target)
    with _client(args) as client:
        versions = _versions(client)
        chosen = (
            next((v for v in versions if v["id"] == args.version), None)
            if args.version
            else in_force(versions, datetime.now(UTC))
        )
        if chosen is None:
            raise NetworkError(f"no version {args.version or 'in force'}")
        response = client.get(f"/v1/network/versions/{chosen['id']}/feed")
    if response.status_code != 200:
        raise _refusal(response)
    data = response.content
    if hashlib.sha256(data).hexdigest() != chosen["sha256"]:
        raise NetworkError(f"version {chosen['id']}: the feed does not match its sha256")
    if target.suffix == ".zip":
        target.write_bytes(data)
    else:
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                (target / Path(name).name).write_bytes(archive.read(name))
    print(f"version {chosen['id']} (from {chosen['effective_from']}) written to {target}")
    return 0


def _guarded(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            result: int = command(args)
        except NetworkError as error:
            print(error, file=sys.stderr)
            return 1
        except httpx.HTTPError as error:
            print(f"ticketing unreachable: {error}", file=sys.stderr)
            return 1
        return result

    return run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    network = subparsers.add_parser(
        "network",
        help="import, export and list the network and fare versions (GTFS feeds)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    network.add_argument(
        "--url", help=f"ticketing URL (default: $CITYPASS_TICKETING_URL or {DEFAULT_URL})"
    )
    commands = network.add_subparsers(dest="network_command", required=True)

    importing = commands.add_parser("import", help="check a feed and store it as a new version")
    importing.add_argument("feed", help="a GTFS feed: a directory of .txt files or a zip")
    importing.add_argument(
        "--effective-from", help="ISO 8601 instant with its offset (default: now)"
    )
    importing.add_argument("--token", help="operator token (default: $TICKETING_OPERATOR_TOKEN)")
    importing.set_defaults(func=_guarded(import_command))

    exporting = commands.add_parser("export", help="write a version's feed")
    exporting.add_argument("target", help="a directory, or a file ending in .zip")
    exporting.add_argument("--version", help="the version id (default: the one in force)")
    exporting.set_defaults(func=_guarded(export_command))

    listing = commands.add_parser("versions", help="every version and the one in force")
    listing.set_defaults(func=_guarded(versions_command))
