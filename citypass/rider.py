"""`citypass rider`: a rider's phone in a terminal, and the Python SDK behind it.

  citypass rider signup --phone 0912345678 [--category student]
  citypass rider login --phone 0912345678       (password: prompt, --password-stdin or
                                                 $CITYPASS_RIDER_PASSWORD)
  citypass rider device                         register this home's device key (made here)
  citypass rider products | balance | tickets
  citypass rider topup 100000                   a VietQR to pay with `citypass bank pay "<qr>"`
  citypass rider buy METRO-DAY [--line 32]
  citypass rider refresh [TICKET]               fetch fresh credentials (all live tickets)
  citypass rider qr [TICKET] [--png FILE]       the current dynamic QR, signed on this machine
  citypass rider logout

Everything lives in the rider home (`--home`, `$CITYPASS_HOME`, default `~/.citypass`): the
device private key (`device.key`, mode 0600, never sent anywhere), the session and the
credentials. The QR is made locally from a stored credential, so `qr` works offline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import getpass
import hashlib
import io
import os
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared import qrimage, ticketcodec

DEFAULT_URL = "http://127.0.0.1:8001"
PRIVATE = 0o600


class RiderError(Exception):
    """A refusal by the ticketing service (its problem `code` and `detail`) or a local one."""

    def __init__(
        self,
        code: str,
        detail: str,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status
        self.problem = problem or {}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _write_private(path: Path, data: bytes) -> None:
    """Create or replace `path` with mode 0600 from the first byte on (never world-readable)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


@dataclass
class RiderHome:
    """The rider's files: device key, session, credentials, QR counter."""

    path: Path

    @classmethod
    def default(cls, home: str | None = None) -> RiderHome:
        return cls(Path(home or os.environ.get("CITYPASS_HOME") or Path.home() / ".citypass"))

    @property
    def key_path(self) -> Path:
        return self.path / "device.key"

    def device_key(self, *, create: bool = False) -> Ed25519PrivateKey:
        if self.key_path.exists():
            if self.key_path.stat().st_mode & 0o077:
                raise RiderError(
                    "unsafe_key_file", f"{self.key_path} is readable by others: chmod 600 it"
                )
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise RiderError("bad_key_file", f"{self.key_path} is not an Ed25519 key")
            return key
        if not create:
            raise RiderError("no_device_key", "no device key yet: run `citypass rider device`")
        key = ticketcodec.generate_device_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(self.key_path, pem)
        return key

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.path / name
        if not path.exists():
            return None
        data: dict[str, Any] = orjson.loads(path.read_bytes())
        return data

    def save(self, name: str, data: dict[str, Any]) -> None:
        _write_private(self.path / name, orjson.dumps(data, option=orjson.OPT_INDENT_2))

    def forget(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def credential(self, ticket_id: str) -> dict[str, Any] | None:
        return self.load(f"credentials/{ticket_id}.json")

    def save_credential(self, credential: dict[str, Any]) -> None:
        self.save(f"credentials/{credential['ticket_id']}.json", credential)

    def credentials(self) -> list[dict[str, Any]]:
        folder = self.path / "credentials"
        if not folder.exists():
            return []
        return [orjson.loads(path.read_bytes()) for path in sorted(folder.glob("*.json"))]

    def next_counter(self) -> int:
        """Each QR the phone signs gets the next counter value (gates see them in order)."""
        state = self.load("counter.json") or {"counter": 0}
        counter = int(state["counter"]) + 1
        self.save("counter.json", {"counter": counter})
        return counter


def signed_credential(credential: dict[str, Any]) -> ticketcodec.SignedCredential:
    return ticketcodec.SignedCredential(
        credential_bytes=_from_b64url(credential["credential"]),
        issuer_signature=_from_b64url(credential["issuer_signature"]),
        kid=credential["kid"],
    )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class RiderClient:
    """The rider app's calls to ticketing; refreshes the access token by itself."""

    def __init__(
        self, home: RiderHome, base_url: str | None = None, http: httpx.AsyncClient | None = None
    ) -> None:
        self.home = home
        session = home.load("session.json") or {}
        self.base_url = (
            base_url
            or session.get("url")
            or os.environ.get("CITYPASS_TICKETING_URL")
            or DEFAULT_URL
        )
        self.http = http or httpx.AsyncClient(base_url=self.base_url, timeout=15)

    async def close(self) -> None:
        await self.http.aclose()

    # Accounts ---------------------------------------------------------------------------------

    async def sign_up(self, phone: str, password: str, category: str = "regular") -> dict[str, Any]:
        body = {"phone": phone, "password": password, "category": category}
        return self._keep_session(await self._object("POST", "/v1/riders", json=body, auth=False))

    async def log_in(self, phone: str, password: str) -> dict[str, Any]:
        body = {"phone": phone, "password": password}
        return self._keep_session(await self._object("POST", "/v1/sessions", json=body, auth=False))

    async def log_out(self) -> None:
        session = self.home.load("session.json")
        if session is not None:
            body = {"refresh_token": session["refresh_token"]}
            await self._request("POST", "/v1/sessions/revoke", json=body, auth=False)
        self.home.forget("session.json")

    async def me(self) -> dict[str, Any]:
        return await self._object("GET", "/v1/me")

    async def register_device(self, label: str | None = None) -> dict[str, Any]:
        """Register this home's device key (created on first use) as the active device."""
        key = self.home.device_key(create=True)
        body = {"public_key": _b64url(ticketcodec.public_key_bytes(key)), "label": label}
        return await self._object("POST", "/v1/devices", json=body)

    # Wallet, products, purchases --------------------------------------------------------------

    async def products(self) -> list[dict[str, Any]]:
        return await self._list("GET", "/v1/products", auth=False)

    async def wallet(self) -> dict[str, Any]:
        return await self._object("GET", "/v1/wallet")

    async def top_up(self, amount: int, key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        return await self._object(
            "POST", "/v1/wallet/topups", json={"amount": amount}, headers=headers
        )

    async def buy(
        self, product: str, line: str | None = None, key: str | None = None
    ) -> dict[str, Any]:
        """Buy once: the same `key` on a retry never buys twice."""
        body: dict[str, Any] = {"product_code": product}
        if line is not None:
            body["line"] = line
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        return await self._object("POST", "/v1/purchases", json=body, headers=headers)

    async def tickets(self) -> list[dict[str, Any]]:
        return await self._list("GET", "/v1/tickets")

    async def fares(self, ticket_id: str, day: str | None = None) -> dict[str, Any]:
        query = f"?day={day}" if day else ""
        return await self._object("GET", f"/v1/me/tickets/{ticket_id}/fares{query}")

    # Credentials and the dynamic QR -----------------------------------------------------------

    async def credential(self, ticket_id: str, *, refresh: bool = False) -> dict[str, Any]:
        """The stored credential while it is fresh; otherwise a new one (kept for offline)."""
        stored = self.home.credential(ticket_id)
        if stored is not None and stored["device_fingerprint"] != self.device_fingerprint():
            stored = None  # bound to a key this home no longer has
        now = datetime.now(UTC)
        if stored is not None and not refresh and _time(stored["refresh_at"]) > now:
            return stored
        try:
            fetched = await self._object("GET", f"/v1/tickets/{ticket_id}/credential")
        except httpx.HTTPError:
            if stored is not None and _time(stored["valid_until"]) > now:
                return stored  # offline: what we have is still valid
            raise
        self.home.save_credential(fetched)
        return fetched

    async def refresh_all(self) -> list[dict[str, Any]]:
        live = [t for t in await self.tickets() if t["status"] == "active"]
        return [await self.credential(t["id"], refresh=True) for t in live]

    def device_fingerprint(self) -> str:
        """As ticketing names device keys: hex SHA-256 of the raw public key."""
        public_key = ticketcodec.public_key_bytes(self.home.device_key())
        return hashlib.sha256(public_key).hexdigest()

    def dynamic_qr(self, credential: dict[str, Any], at: int | None = None) -> str:
        """Sign the QR text for this moment with the device key (no network)."""
        return ticketcodec.make_dynamic_qr(
            signed_credential(credential),
            self.home.device_key(),
            at=int(time.time()) if at is None else at,
            counter=self.home.next_counter(),
        )

    # Plumbing ---------------------------------------------------------------------------------

    def _keep_session(self, answer: dict[str, Any]) -> dict[str, Any]:
        self.home.save(
            "session.json",
            {
                "url": self.base_url,
                "rider_id": answer["rider"]["id"],
                "phone": answer["rider"]["phone"],
                "access_token": answer["access_token"],
                "refresh_token": answer["refresh_token"],
            },
        )
        return answer

    async def _refresh_tokens(self) -> bool:
        session = self.home.load("session.json")
        if session is None:
            return False
        response = await self.http.post(
            "/v1/sessions/refresh", json={"refresh_token": session["refresh_token"]}
        )
        if response.status_code != 200:
            return False
        self._keep_session(response.json())
        return True

    async def _object(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        answer = await self._request(method, path, **options)
        if not isinstance(answer, dict):
            raise RiderError("unexpected_answer", f"{method} {path} did not answer an object")
        return answer

    async def _list(self, method: str, path: str, **options: Any) -> list[dict[str, Any]]:
        answer = await self._request(method, path, **options)
        if not isinstance(answer, list):
            raise RiderError("unexpected_answer", f"{method} {path} did not answer a list")
        return answer

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        for attempt in range(2):
            sent = dict(headers or {})
            if auth:
                session = self.home.load("session.json")
                if session is None:
                    raise RiderError("not_logged_in", "log in first: `citypass rider login`")
                sent["Authorization"] = f"Bearer {session['access_token']}"
            response = await self.http.request(method, path, json=json, headers=sent)
            if (
                response.status_code == 401
                and auth
                and attempt == 0
                and await self._refresh_tokens()
            ):
                continue
            if response.is_success:
                return None if response.status_code == 204 else response.json()
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            if not isinstance(problem, dict):
                problem = {}
            raise RiderError(
                str(problem.get("code", "http_error")),
                str(problem.get("detail", response.text[:200])),
                response.status_code,
                problem,
            )
        raise RiderError("not_logged_in", "the session has ended: log in again")


# Command line -----------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rider = subparsers.add_parser(
        "rider",
        help="a rider's phone: sign up, top up, buy, show the dynamic QR",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rider.add_argument("--home", help="rider files (default: $CITYPASS_HOME or ~/.citypass)")
    rider.add_argument(
        "--url", help=f"ticketing URL (default: $CITYPASS_TICKETING_URL or {DEFAULT_URL})"
    )
    commands = rider.add_subparsers(dest="rider_command", required=True)

    for name, helptext in (("signup", "create an account"), ("login", "log in")):
        command = commands.add_parser(name, help=helptext)
        command.add_argument("--phone", required=True, help="Vietnamese mobile number")
        command.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )
        command.add_argument("--no-device", action="store_true", help="do not register a device")
        if name == "signup":
            command.add_argument(
                "--category",
                default="regular",
                help="regular (default), student, worker, elderly, child, merit, disabled, "
                "poor_household: concessions wait for an operator's approval",
            )
    commands.add_parser("device", help="register this home's device key (created if needed)")
    commands.add_parser("logout", help="end the session (the device key stays)")
    commands.add_parser("products", help="fare products on sale")
    commands.add_parser("balance", help="wallet balance")
    topup = commands.add_parser("topup", help="top up the wallet with a VietQR bank transfer")
    topup.add_argument("amount", type=int, help="VND, 10,000 to 10,000,000")
    buy = commands.add_parser("buy", help="buy a product from the wallet")
    buy.add_argument("product", help="product code, e.g. METRO-DAY")
    buy.add_argument("--line", help="line or bus route, for one-route products")
    buy.add_argument("--key", help="Idempotency-Key to reuse after a failed attempt")
    commands.add_parser("tickets", help="your tickets")
    fares = commands.add_parser("fares", help="a stored-value ticket's fares of one day")
    fares.add_argument("ticket", nargs="?", help="ticket id (default: your newest stored value)")
    fares.add_argument("--day", help="fare day YYYY-MM-DD (Hanoi, from 04:00; default today)")
    refresh = commands.add_parser("refresh", help="fetch fresh credentials")
    refresh.add_argument("ticket", nargs="?", help="one ticket id (default: every live ticket)")
    qr = commands.add_parser("qr", help="show the current dynamic QR (made offline)")
    qr.add_argument("ticket", nargs="?", help="ticket id (default: the newest live ticket)")
    qr.add_argument("--png", type=Path, help="also write the QR as a PNG file")
    qr.add_argument("--quiet", action="store_true", help="do not draw the QR in the terminal")
    rider.set_defaults(func=main_command)


def _password(args: argparse.Namespace) -> str:
    """--password-stdin, CITYPASS_RIDER_PASSWORD, or a prompt. EOFError when the prompt's input
    is closed (Ctrl-D), KeyboardInterrupt on Ctrl-C."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    from_env = os.environ.get("CITYPASS_RIDER_PASSWORD")
    if from_env:
        return from_env
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:  # no terminal: a line of stdin, as getpass would read, minus its warnings
        print("Password: ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            raise EOFError from None
        return line.rstrip("\n")
    return getpass.getpass("Password: ")


def _vnd(amount: int) -> str:
    return f"{amount:,} VND".replace(",", ".")


async def _account(client: RiderClient, args: argparse.Namespace, password: str) -> None:
    if args.rider_command == "signup":
        answer = await client.sign_up(args.phone, password, args.category)
        print(f"Signed up as {answer['rider']['phone']} ({answer['rider']['category']}).")
        if answer["rider"]["category_status"] == "pending":
            print(f"Your {args.category} category waits for an operator's approval.")
    else:
        answer = await client.log_in(args.phone, password)
        print(f"Logged in as {answer['rider']['phone']}.")
    if not args.no_device:
        await _device(client)


async def _device(client: RiderClient) -> None:
    device = await client.register_device()
    print(f"This device ({device['fingerprint']}) is your active device.")
    print(f"Its private key stays in {client.home.key_path} (mode 0600).")


async def _topup(client: RiderClient, amount: int) -> None:
    topup = await client.top_up(amount)
    print(f"Top-up {topup['reference']}: {_vnd(topup['amount'])}, {topup['status']}.")
    print("Pay it from your bank app with this VietQR, or in the sandbox:")
    print(f'  citypass bank pay "{topup["qr"]}"')


async def _buy(client: RiderClient, args: argparse.Namespace) -> None:
    key = args.key or str(uuid.uuid4())
    try:
        purchase = await client.buy(args.product, args.line, key)
    except RiderError as error:
        if error.code in ("payments_unavailable", "payment_in_progress"):
            print(f"{error.detail}\nRetry with: citypass rider buy {args.product} --key {key}")
        raise
    ticket = purchase["ticket"]
    print(f"Bought {purchase['product_code']} for {_vnd(purchase['price_vnd'])}.")
    print(f"Ticket {ticket['id']}, valid {ticket['valid_from']} → {ticket['valid_until']}.")
    await client.credential(ticket["id"])


async def _show_qr(client: RiderClient, args: argparse.Namespace) -> None:
    ticket_id = args.ticket
    if ticket_id is None:
        now = datetime.now(UTC)
        live = [c for c in client.home.credentials() if _time(c["valid_until"]) > now]
        if not live:
            live = await client.refresh_all()
        if not live:
            raise RiderError("no_ticket", "no live ticket: buy one with `citypass rider buy`")
        ticket_id = max(live, key=lambda c: c["valid_until"])["ticket_id"]
    text = client.dynamic_qr(await client.credential(ticket_id))
    if not args.quiet:
        drawing = io.StringIO()
        segno.make_qr(text, error="m", boost_error=False).terminal(out=drawing, compact=True)
        print(drawing.getvalue(), end="")
    print(f"QR text: {text}")
    print(f"QR version {qrimage.qr_version(text)}; valid for about 30 s from now.")
    if args.png is not None:
        args.png.write_bytes(qrimage.render_png(text))
        print(f"PNG written to {args.png}")


def _print_products(products: list[dict[str, Any]]) -> None:
    for product in products:
        lines = (
            "one line of your choice"
            if product.get("line_choice")
            else ", ".join(product["lines"]) or "all lines"
        )
        print(
            f"{product['code']:<20} {_vnd(product['price_vnd']):>12}  {product['name_en']} "
            f"({lines}; {', '.join(product['categories'])})"
        )


def _print_tickets(tickets: list[dict[str, Any]]) -> None:
    if not tickets:
        print("No tickets yet.")
    for ticket in tickets:
        print(
            f"{ticket['id']}  {ticket['product_code']:<18} {ticket['status']:<8} "
            f"until {ticket['valid_until']}"
        )


async def _fares(client: RiderClient, args: argparse.Namespace) -> None:
    ticket_id = args.ticket
    if ticket_id is None:
        stored = [t for t in await client.tickets() if t["kind"] == "stored_value"]
        if not stored:
            raise RiderError("no_ticket", "no stored-value ticket: buy STORED-VALUE first")
        ticket_id = max(stored, key=lambda t: t["created_at"])["id"]
    account = await client.fares(ticket_id, args.day)
    print(f"Fares of {account['fare_day']} (from 04:00 Hanoi time), ticket {ticket_id}:")
    for leg in account["legs"]:
        where = (
            f"bus {leg['route_id']}"
            if leg["from_stop"] is None
            else f"metro {leg['route_id']} {leg['open_trip_entry'] or leg['from_stop']} → "
            + ("no exit tap (whole line)" if leg["open_trip_entry"] else leg["to_stop"])
        )
        notes = [f"transfer −{_vnd(leg['transfer_discount'])}"] if leg["transfer_discount"] else []
        notes += [f"capped −{_vnd(leg['capped'])}"] if leg["capped"] else []
        print(
            f"  {leg['departed_at'][11:16]}Z  {where:<34} fare {_vnd(leg['fare']):>11}  "
            f"paid {_vnd(leg['charged']):>11}  {', '.join(notes)}".rstrip()
        )
    if not account["legs"]:
        print("  no rides")
    for name, total, cap in (
        ("Today", account["day_total"], account["day_cap"]),
        ("This week", account["week_total"], account["week_cap"]),
    ):
        shown = (
            f"{_vnd(total)} of the {_vnd(cap)} cap ({total * 100 // cap} %)" if cap else _vnd(total)
        )
        print(f"{name}: {shown}")
    if account["capped_today"]:
        print("Capped today: your next rides today are free.")


async def _run(args: argparse.Namespace, password: str) -> None:
    client = RiderClient(RiderHome.default(args.home), args.url)
    try:
        command: str = args.rider_command
        handlers: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "signup": lambda: _account(client, args, password),
            "login": lambda: _account(client, args, password),
            "device": lambda: _device(client),
            "topup": lambda: _topup(client, args.amount),
            "buy": lambda: _buy(client, args),
            "qr": lambda: _show_qr(client, args),
            "fares": lambda: _fares(client, args),
        }
        if command in handlers:
            await handlers[command]()
        elif command == "logout":
            await client.log_out()
            print("Logged out.")
        elif command == "products":
            _print_products(await client.products())
        elif command == "balance":
            wallet = await client.wallet()
            print(f"Balance: {_vnd(wallet['balance'])}")
        elif command == "tickets":
            _print_tickets(await client.tickets())
        elif command == "refresh":
            fresh = (
                [await client.credential(args.ticket, refresh=True)]
                if args.ticket
                else await client.refresh_all()
            )
            for credential in fresh:
                print(
                    f"{credential['ticket_id']}: credential {credential['kid']} valid until "
                    f"{credential['valid_until']}"
                )
    finally:
        await client.close()


def main_command(args: argparse.Namespace) -> int:
    # Asked before the event loop starts: inside it, the loop's own SIGINT handler would only
    # cancel the task while the prompt kept waiting.
    try:
        password = _password(args) if args.rider_command in ("signup", "login") else ""
    except (EOFError, KeyboardInterrupt) as closed:
        print("\nNo password given: nothing was done.", file=sys.stderr)
        return 130 if isinstance(closed, KeyboardInterrupt) else 1
    try:
        asyncio.run(_run(args, password))
    except RiderError as error:
        print(f"Refused ({error.code}): {error.detail}")
        return 1
    except httpx.HTTPError as error:
        print(f"Ticketing did not answer: {error!r}")
        return 1
    return 0
