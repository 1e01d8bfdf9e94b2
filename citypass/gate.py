"""`citypass gate`: a gate simulator, and the SDK's offline validator.

citypass gate secret --gate G [--out FILE]     print (or write, 0600) gate G's device secret;
                                               reading never changes it (operator token)
citypass gate secret --gate G --rotate         replace it; the old one is still accepted for
                                               the grace period the answer states
citypass gate scan IMAGE.png --gate G          read the QR in the image (zxing-cpp), sign the
                                               request as gate G, print decision and latency
citypass gate offline fetch --gate G           download and verify G's signed offline bundle
citypass gate offline scan IMAGE.png --gate G  decide without the network (bundle + local
                                               replay cache) and queue the decision
citypass gate offline upload --gate G          upload queued decisions for reconciliation

The gate secret comes from --secret, --secret-file or CITYPASS_GATE_SECRET; the service from
--url or CITYPASS_VALIDATION_URL (default http://127.0.0.1:8002); the operator token of
`secret` from --admin-token or VALIDATION_ADMIN_TOKEN (default: the development token).
Offline state (bundle, replay cache, queue) lives in --state (default var/gates/<gate id>).
Exit code: 0 accepted (or done), 1 rejected, 2 could not decide (or failed).
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import uuid_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import SecretStr

from services.validation.bundle import BundleError, open_bundle
from services.validation.memory import CachedIssuerKey, VerifiedSignatures, decode_public_key
from services.validation.rules import (
    DEFAULT_PRODUCT,
    Action,
    Decision,
    DenyEntry,
    Direction,
    FareTable,
    GatePlace,
    ProductRule,
    Reason,
    TicketKind,
    codec_reason,
    device_fingerprint,
    display,
    static_verdict,
)
from services.validation.settings import ValidationSettings
from shared.devicesigning import DeviceAuth, DeviceSigner
from shared.qrimage import decode_png
from shared.ticketcodec import (
    TicketCodecError,
    check_freshness,
    parse_dynamic_qr,
    verify_dynamic_qr,
)

DEFAULT_URL = "http://127.0.0.1:8002"
EXIT_ACCEPT, EXIT_REJECT, EXIT_ERROR = 0, 1, 2


class GateError(RuntimeError):
    """The simulator cannot decide (no QR in the image, no bundle, service unreachable…)."""


# The offline validator ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfflineResult:
    validation_id: str
    decision: Decision
    reason: Reason
    reason_detail: str | None
    action: Action
    message_vi: str
    message_en: str
    ticket_id: str | None
    remaining_rides: int | None
    fare: int | None = None  # a stored-value bus boarding: the route's fare, by the version then


@dataclass
class OfflineState:
    """What an offline gate remembers between scans (kept in its state directory)."""

    used: dict[str, int] = field(default_factory=dict)  # ticket:at:counter → forget after
    inside: dict[str, int] = field(default_factory=dict)  # ticket → entered at (this gate)
    boarded: dict[str, int] = field(default_factory=dict)  # ticket → boarded at (bus)
    rides: dict[str, int] = field(default_factory=dict)  # ticket → rides this gate consumed
    queue: list[dict[str, Any]] = field(default_factory=list)  # decisions to upload

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "used": self.used,
                "inside": self.inside,
                "boarded": self.boarded,
                "rides": self.rides,
                "queue": self.queue,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> OfflineState:
        data = orjson.loads(raw)
        return cls(data["used"], data["inside"], data["boarded"], data["rides"], data["queue"])


class OfflineValidator:
    """Decides like the service, from a verified bundle and what this gate has seen itself.

    What one gate cannot know (rides used or trips opened at other gates, fares) is settled
    by the service when the queue is uploaded; a code accepted at two gates raises an alert.
    """

    def __init__(self, bundle: Mapping[str, Any], state: OfflineState | None = None) -> None:
        self.bundle = bundle
        self.state = state or OfflineState()
        gate = bundle["gate"]
        self.gate = GatePlace(
            gate_id=gate["gate_id"],
            station=gate.get("station"),
            route=gate.get("route"),
            direction=Direction(gate["direction"]),
            products=tuple(gate.get("products", ())),
        )
        verified = VerifiedSignatures(100_000)
        self.keys: dict[str, Ed25519PublicKey] = {
            k["kid"]: CachedIssuerKey(
                Ed25519PublicKey.from_public_bytes(decode_public_key(k["public_key"])), verified
            )
            for k in bundle["issuer_keys"]
        }
        self.key_not_after = {k["kid"]: k.get("not_after") for k in bundle["issuer_keys"]}
        self.deny_tickets = {
            t: DenyEntry(Reason(reason), until)
            for t, (reason, until) in bundle["deny"]["tickets"].items()
        }
        self.deny_devices = {
            d: DenyEntry(Reason(reason), until)
            for d, (reason, until) in bundle["deny"]["devices"].items()
        }
        self.products = {
            code: ProductRule(TicketKind(rule["kind"]), rule["rides"])
            for code, rule in bundle["products"].items()
        }
        rules = bundle["rules"]
        self.window_s = int(rules["qr_window_s"])
        self.skew_s = int(rules["qr_skew_s"])
        self.max_trip_s = int(rules["max_trip_s"])
        self.passback_s = int(rules["bus_passback_s"])
        self.valid_until = int(bundle["valid_until"])
        fares = sorted(
            (FareTable.from_bundle(table) for table in bundle["fares"]),
            key=lambda table: table.effective_from,
        )
        self.fares = fares
        self._fare_starts = [table.effective_from for table in fares]

    def fares_at(self, now: int) -> FareTable:
        """The network version in force at `now`: the bundle carries each one that starts
        before it expires, so the gate switches at the right second without the network."""
        index = bisect.bisect_right(self._fare_starts, now)
        if index == 0:
            raise GateError("the bundle holds no network version in force now; fetch a new one")
        return self.fares[index - 1]

    @classmethod
    def from_signed(
        cls, signed: Mapping[str, Any], public_key: bytes, state: OfflineState | None = None
    ) -> OfflineValidator:
        return cls(open_bundle(dict(signed), public_key, int(time.time())), state)

    def decide(self, text: str, now: float | None = None) -> OfflineResult:
        clock = int(time.time() if now is None else now)
        if clock > self.valid_until:
            raise GateError("the offline bundle has expired; fetch a new one")
        validation_id = str(uuid_utils.uuid7())
        ticket_id: str | None = None
        detail: str | None = None
        action, rides_left, fare = Action.none, None, None
        try:
            qr = parse_dynamic_qr(text)
            ticket_id = str(qr.credential.ticket_id)
            keys = self.keys
            not_after = self.key_not_after.get(qr.credential.kid)
            if not_after is not None and clock > not_after:
                keys = {kid: k for kid, k in keys.items() if kid != qr.credential.kid}
            verify_dynamic_qr(qr, keys)
        except TicketCodecError as error:
            reason, detail = codec_reason(error), error.code
        else:
            reason, action, rides_left = self._rules(qr.credential, qr.at, qr.counter, clock)
            kind = self.products.get(qr.credential.product, DEFAULT_PRODUCT).kind
            boarded = reason is Reason.ok and action is Action.tap and self.gate.route is not None
            if boarded and kind is TicketKind.stored_value and self.gate.route is not None:
                fare = self.fares_at(clock).bus_fare(self.gate.route)
        vi, en = display(reason, action, rides_left=rides_left, fare=fare)
        result = OfflineResult(
            validation_id=validation_id,
            decision=Decision.accept if reason is Reason.ok else Decision.reject,
            reason=reason,
            reason_detail=detail,
            action=action,
            message_vi=vi,
            message_en=en,
            ticket_id=ticket_id,
            remaining_rides=rides_left,
            fare=fare,
        )
        self.state.queue.append(
            {
                "validation_id": validation_id,
                "qr": text[:1000],
                "scanned_at": datetime.fromtimestamp(clock, UTC).isoformat(),
                "decision": result.decision.value,
                "reason": reason.value,
                "action": action.value,
            }
        )
        return result

    def _rules(
        self, credential: Any, at: int, counter: int, now: int
    ) -> tuple[Reason, Action, int | None]:
        fresh = check_freshness(at, now, self.window_s, self.skew_s)
        if fresh is not None:
            return Reason(fresh), Action.none, None
        ticket = str(credential.ticket_id)
        used_key = f"{ticket}:{at}:{counter}"
        if used_key in self.state.used:
            return Reason.replayed, Action.none, None
        self.state.used[used_key] = now + self.window_s + 2 * self.skew_s + 10
        if len(self.state.used) > 50_000:
            self.state.used = {k: until for k, until in self.state.used.items() if until >= now}
        refused = static_verdict(
            credential,
            self.gate,
            self.fares_at(now).line_of(self.gate.station),
            now,
            self.deny_tickets,
            self.deny_devices,
            device_fingerprint(credential.device_public_key),
        )
        if refused is not None:
            return refused, Action.none, None
        product = self.products.get(credential.product, DEFAULT_PRODUCT)
        used = self.state.rides.get(ticket, 0)
        if self.gate.route is not None:
            if product.rides is not None and used >= product.rides:
                return Reason.no_rides_left, Action.tap, 0
            boarded = self.state.boarded.get(ticket)
            if boarded is not None and now - boarded <= self.passback_s:
                return Reason.already_inside, Action.tap, None
            self.state.boarded[ticket] = now
            return Reason.ok, Action.tap, self._consume(ticket, product)
        entered = self.state.inside.get(ticket)
        inside = entered is not None and now - entered <= self.max_trip_s
        direction = self.gate.direction
        if direction is Direction.exit or (direction is Direction.both and inside):
            self.state.inside.pop(ticket, None)  # another gate may have seen the entry
            return Reason.ok, Action.exit, None
        if product.rides is not None and used >= product.rides:
            return Reason.no_rides_left, Action.entry, 0
        if inside:
            return Reason.already_inside, Action.entry, None
        self.state.inside[ticket] = now
        return Reason.ok, Action.entry, self._consume(ticket, product)

    def _consume(self, ticket: str, product: ProductRule) -> int | None:
        if product.rides is None:
            return None
        used = self.state.rides.get(ticket, 0) + 1
        self.state.rides[ticket] = used
        return product.rides - used


# Talking to the service -------------------------------------------------------------------------


def gate_client(url: str, signer: DeviceSigner) -> httpx.Client:
    """A client whose every request is signed as the gate (shared.devicesigning.DeviceAuth)."""
    return httpx.Client(base_url=url, timeout=10, auth=DeviceAuth(signer))


def post_json(client: httpx.Client, path: str, payload: Any) -> httpx.Response:
    return client.post(
        path, content=orjson.dumps(payload), headers={"Content-Type": "application/json"}
    )


def read_qr(image: Path) -> str:
    try:
        texts = decode_png(image.read_bytes())
    except OSError as exc:
        raise GateError(f"cannot read {image}: {exc}") from exc
    if not texts:
        raise GateError(f"no QR code found in {image}")
    return texts[0]


def _secret(args: argparse.Namespace) -> str:
    if args.secret:
        return str(args.secret)
    if args.secret_file:
        return Path(args.secret_file).read_text().strip()
    secret = os.environ.get("CITYPASS_GATE_SECRET")
    if not secret:
        raise GateError("give the gate secret: --secret, --secret-file or CITYPASS_GATE_SECRET")
    return secret


def _url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("CITYPASS_VALIDATION_URL") or DEFAULT_URL).rstrip("/")


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state) if args.state else Path("var") / "gates" / args.gate


def _problem(response: httpx.Response) -> str:
    try:
        problem = response.json()
        return f"HTTP {response.status_code} {problem.get('code')}: {problem.get('detail')}"
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _print_decision(decided: Mapping[str, Any], latency_ms: float | None, as_json: bool) -> int:
    if as_json:
        shown = dict(decided)
        if latency_ms is not None:
            shown["latency_ms"] = round(latency_ms, 2)
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    else:
        verdict = str(decided["decision"]).upper()
        line = f"{verdict} {decided['reason']} ({decided['action']})"
        print(f"{line}  {decided['message_vi']} / {decided['message_en']}")
        if decided.get("remaining_rides") is not None:
            print(f"rides left: {decided['remaining_rides']}")
        if latency_ms is not None:
            print(f"latency: {latency_ms:.1f} ms")
    return EXIT_ACCEPT if decided["decision"] == Decision.accept else EXIT_REJECT


def _admin_token(args: argparse.Namespace) -> str:
    if args.admin_token:
        return str(args.admin_token)
    configured = os.environ.get("VALIDATION_ADMIN_TOKEN")
    if configured:
        return configured
    default: SecretStr = ValidationSettings.model_fields["admin_token"].default
    return default.get_secret_value()


def secret_command(args: argparse.Namespace) -> int:
    """Read the gate's secret (never changing it), or rotate it with --rotate."""
    path = f"/v1/gates/{args.gate}/secret" + (":rotate" if args.rotate else "")
    headers = {"Authorization": f"Bearer {_admin_token(args)}"}
    try:
        with httpx.Client(base_url=_url(args), timeout=10) as client:
            if args.rotate:
                response = client.post(path, headers=headers)
            else:
                response = client.get(path, headers=headers)
    except httpx.HTTPError as exc:
        print(f"error: {exc}")
        return EXIT_ERROR
    if response.status_code != 200:
        print(f"error: {_problem(response)}")
        return EXIT_ERROR
    answer = response.json()
    if args.out:
        out = Path(args.out)
        out.touch(mode=0o600)
        out.chmod(0o600)
        out.write_text(answer["secret"] + "\n")
        print(f"{'new ' if args.rotate else ''}secret of gate {args.gate} written to {out}")
    else:
        print(answer["secret"])
    if args.rotate:
        until = answer.get("previous_valid_until")
        old = f"accepted until {until}" if until else "no longer accepted"
        print(f"the secret it replaced is {old}", file=sys.stderr)
    return EXIT_ACCEPT


def scan_command(args: argparse.Namespace) -> int:
    try:
        qr = read_qr(Path(args.image))
        signer = DeviceSigner(args.gate, _secret(args))
        payload = {"qr": qr, "gate_id": args.gate, "scanned_at": datetime.now(UTC).isoformat()}
        with gate_client(_url(args), signer) as client:
            started = time.perf_counter()
            response = post_json(client, "/v1/validations", payload)
            latency_ms = (time.perf_counter() - started) * 1000
    except (GateError, httpx.HTTPError, ValueError) as exc:
        print(f"error: {exc}")
        return EXIT_ERROR
    if response.status_code != 200:
        print(f"error: {_problem(response)}")
        return EXIT_ERROR
    return _print_decision(response.json(), latency_ms, args.json)


def fetch_command(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    try:
        signer = DeviceSigner(args.gate, _secret(args))
        with gate_client(_url(args), signer) as client:
            key_response = client.get("/v1/gate-bundle/key")
            bundle_response = client.get("/v1/gate-bundle")
        for response in (key_response, bundle_response):
            if response.status_code != 200:
                raise GateError(_problem(response))
        pinned = state_dir / "bundle-key.json"
        key = key_response.json()
        if pinned.exists() and orjson.loads(pinned.read_bytes())["key_id"] != key["key_id"]:
            raise GateError("the service's bundle key differs from the pinned one; re-provision")
        public_key = decode_public_key(key["public_key"])
        bundle = open_bundle(bundle_response.json(), public_key, int(time.time()))
    except (GateError, BundleError, httpx.HTTPError, ValueError) as exc:
        print(f"error: {exc}")
        return EXIT_ERROR
    state_dir.mkdir(parents=True, exist_ok=True)
    pinned.write_bytes(orjson.dumps(key))
    (state_dir / "bundle.json").write_bytes(bundle_response.content)
    until = datetime.fromtimestamp(bundle["valid_until"], UTC)
    print(f"bundle for {args.gate}: {len(bundle['issuer_keys'])} issuer keys, valid until {until}")
    return EXIT_ACCEPT


def load_offline(state_dir: Path) -> OfflineValidator:
    try:
        key = orjson.loads((state_dir / "bundle-key.json").read_bytes())
        signed = orjson.loads((state_dir / "bundle.json").read_bytes())
    except FileNotFoundError as exc:
        raise GateError(f"no bundle in {state_dir}; run `citypass gate offline fetch`") from exc
    state_path = state_dir / "state.json"
    state = OfflineState.from_json(state_path.read_bytes()) if state_path.exists() else None
    try:
        return OfflineValidator.from_signed(signed, decode_public_key(key["public_key"]), state)
    except BundleError as exc:
        raise GateError(str(exc)) from exc


def save_offline(state_dir: Path, validator: OfflineValidator) -> None:
    path = state_dir / "state.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(validator.state.to_json())
    temporary.replace(path)


def offline_scan_command(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    try:
        validator = load_offline(state_dir)
        qr = read_qr(Path(args.image))
        started = time.perf_counter()
        result = validator.decide(qr)
        latency_ms = (time.perf_counter() - started) * 1000
    except GateError as exc:
        print(f"error: {exc}")
        return EXIT_ERROR
    save_offline(state_dir, validator)
    decided = {
        "validation_id": result.validation_id,
        "decision": result.decision.value,
        "reason": result.reason.value,
        "reason_detail": result.reason_detail,
        "action": result.action.value,
        "message_vi": result.message_vi,
        "message_en": result.message_en,
        "ticket_id": result.ticket_id,
        "remaining_rides": result.remaining_rides,
        "queued": len(validator.state.queue),
    }
    return _print_decision(decided, latency_ms, args.json)


def upload_command(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    try:
        validator = load_offline(state_dir)
        signer = DeviceSigner(args.gate, _secret(args))
        queue = validator.state.queue
        uploaded = conflicts = 0
        with gate_client(_url(args), signer) as client:
            while queue:
                batch = queue[:1000]
                payload = {"gate_id": args.gate, "decisions": batch}
                response = post_json(client, "/v1/validations/batch", payload)
                if response.status_code != 200:
                    raise GateError(_problem(response))
                conflicts += int(response.json()["conflicts"])
                del queue[: len(batch)]
                uploaded += len(batch)
                save_offline(state_dir, validator)
    except (GateError, httpx.HTTPError, ValueError) as exc:
        print(f"error: {exc}")
        return EXIT_ERROR
    print(f"uploaded {uploaded} decisions; {conflicts} conflicts raised as alerts")
    return EXIT_ACCEPT


def _gate_options(parser: argparse.ArgumentParser, *, offline: bool) -> None:
    parser.add_argument("--gate", required=True, help="the gate id, e.g. 2A-01-EN")
    parser.add_argument("--secret", help="the gate's device secret")
    parser.add_argument("--secret-file", help="a file holding the gate's device secret")
    parser.add_argument("--url", help=f"validation service (default {DEFAULT_URL})")
    if offline:
        parser.add_argument("--state", help="offline state directory (default var/gates/<gate>)")
    parser.add_argument("--json", action="store_true", help="print the full answer as JSON")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gate = subparsers.add_parser(
        "gate",
        help="gate simulator: validate a QR image online or offline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = gate.add_subparsers(dest="gate_command", required=True)
    secret = commands.add_parser(
        "secret", help="print gate --gate's device secret (never changes it), or --rotate it"
    )
    secret.add_argument("--gate", required=True, help="the gate id, e.g. 2A-01-EN")
    secret.add_argument(
        "--rotate",
        action="store_true",
        help="replace the secret; the old one is accepted for the service's grace period",
    )
    secret.add_argument("--out", help="write the secret to this file (mode 0600), not stdout")
    secret.add_argument("--admin-token", help="operator token (default: VALIDATION_ADMIN_TOKEN)")
    secret.add_argument("--url", help=f"validation service (default {DEFAULT_URL})")
    secret.set_defaults(func=secret_command)
    scan = commands.add_parser("scan", help="validate the QR in IMAGE online, as gate --gate")
    scan.add_argument("image", help="PNG (or any image) holding the rider's QR")
    _gate_options(scan, offline=False)
    scan.set_defaults(func=scan_command)

    offline = commands.add_parser("offline", help="decide without the network; upload later")
    offline_commands = offline.add_subparsers(dest="offline_command", required=True)
    fetch = offline_commands.add_parser("fetch", help="download and verify the gate bundle")
    _gate_options(fetch, offline=True)
    fetch.set_defaults(func=fetch_command)
    offline_scan = offline_commands.add_parser("scan", help="decide offline on the QR in IMAGE")
    offline_scan.add_argument("image")
    _gate_options(offline_scan, offline=True)
    offline_scan.set_defaults(func=offline_scan_command)
    upload = offline_commands.add_parser("upload", help="upload queued offline decisions")
    _gate_options(upload, offline=True)
    upload.set_defaults(func=upload_command)
