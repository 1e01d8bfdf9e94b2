"""`citypass parking`: a lane terminal and plate camera simulator, device provisioning, and a
driver's receipt lookup.

citypass parking provision --lot L [--lane LANE] [--kind camera]
                                     provision a device (admin token); prints its secret
citypass parking entry --lot L --lane LANE --plate "29A-123.45" [--confidence 0.97]
                       [--account-qr QR | --rfid TAG] [--at ISO-TIME]
citypass parking exit --lot L --lane LANE --plate … [--offline] [--wait]
                                     --wait shows the VietQR and polls until the barrier opens
citypass parking status SESSION_ID   the exit decision of a session (poll it after `pay`)
citypass parking fallback SESSION_ID the bank is slow: let the vehicle out as a debt
citypass parking receipt --plate "29A-123.45" --code K7QMD-3XRW9
                                     a driver finds a receipt again with the code printed on
                                     it (no device needed; read only: disputes need the
                                     receipt token the exit lane showed)

Lane commands are devices, and devices sign every request: --device-id/--secret, or
PARKING_DEVICE_ID/PARKING_DEVICE_SECRET.
The service: --url or PARKING_URL (default http://127.0.0.1:8003); the admin token for
`provision`: PARKING_ADMIN_TOKEN. Exit code: 0 barrier opens (receipt found), 1 it stays
closed (full, pay, refused; receipt not found or too many lookups), 2 no decision (the
service failed or was unreachable).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import segno

from shared.devicesigning import DeviceAuth, DeviceSigner

DEFAULT_URL = "http://127.0.0.1:8003"
EXIT_OPEN, EXIT_CLOSED, EXIT_ERROR = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parking = subparsers.add_parser(
        "parking",
        help="parking lane terminal / camera simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parking.add_argument("--url", default=os.environ.get("PARKING_URL", DEFAULT_URL))
    parking.add_argument("--device-id", default=os.environ.get("PARKING_DEVICE_ID"))
    parking.add_argument("--secret", default=os.environ.get("PARKING_DEVICE_SECRET"))
    commands = parking.add_subparsers(dest="parking_command", required=True)

    provision = commands.add_parser("provision", help="provision a lane terminal or camera")
    provision.add_argument("--lot", required=True)
    provision.add_argument("--lane", help="the lane it serves (default: every lane of the lot)")
    provision.add_argument("--kind", choices=("lane_terminal", "camera"), default="lane_terminal")
    provision.add_argument("--id", help="device id (default: generated)")
    provision.set_defaults(func=provision_command)

    for name, direction in (("entry", "entries"), ("exit", "exits")):
        lane = commands.add_parser(name, help=f"a vehicle at an {name} lane")
        lane.add_argument("--lot", required=True)
        lane.add_argument("--lane", required=True)
        lane.add_argument("--plate", help="the plate as read by the camera")
        lane.add_argument("--confidence", type=float, default=0.97)
        lane.add_argument("--image-ref", help="where the camera stored the picture")
        lane.add_argument("--account-qr", help="the owner's account QR, scanned")
        lane.add_argument("--rfid", help="the RFID tag id read")
        lane.add_argument("--vehicle-type", choices=("motorbike", "car"))
        lane.add_argument("--at", help="when (ISO 8601 with offset); default now")
        if name == "exit":
            lane.add_argument("--offline", action="store_true", help="let out while offline")
            lane.add_argument("--wait", action="store_true", help="show the VietQR and poll")
        lane.set_defaults(func=lane_command, path=f"/v1/{direction}")

    status = commands.add_parser("status", help="the exit decision of a session")
    status.add_argument("session_id", type=uuid.UUID)
    status.set_defaults(func=status_command)

    fallback = commands.add_parser("fallback", help="let the vehicle out as a debt")
    fallback.add_argument("session_id", type=uuid.UUID)
    fallback.set_defaults(func=fallback_command)

    receipt = commands.add_parser("receipt", help="find a receipt with its plate and code")
    receipt.add_argument("--plate", required=True)
    receipt.add_argument("--code", required=True, help="the receipt code printed on it")
    receipt.set_defaults(func=receipt_command)


def _client(args: argparse.Namespace) -> httpx.Client:
    if not args.device_id or not args.secret:
        raise SystemExit("Give --device-id and --secret (or PARKING_DEVICE_ID/_SECRET).")
    auth = DeviceAuth(DeviceSigner(args.device_id, args.secret))
    return httpx.Client(base_url=args.url.rstrip("/"), auth=auth, timeout=10)


def _show(decision: dict[str, Any]) -> None:
    """What the lane display shows."""
    if "decision" not in decision:
        print(f"refused: {decision.get('code')}: {decision.get('detail')}")
        return
    print(f"{decision['decision'].upper()}  ({decision['reason']})")
    for name in ("session_id", "plate", "vehicle_type", "fee", "settlement", "hold_status"):
        if decision.get(name) is not None:
            print(f"  {name}: {decision[name]}")
    for line in decision.get("lines") or []:
        print(f"    {line['description']}: {line['amount']:,} VND")
    if decision.get("outstanding_debt"):
        print(f"  this plate still owes {decision['outstanding_debt']:,} VND")
    if decision.get("receipt_code"):
        print(f"  receipt code: {decision['receipt_code']}  (printed on the receipt)")
    if decision.get("receipt_token"):
        # Shown to the driver at the barrier only (as a QR): it opens the receipt and disputes.
        print(f"  receipt: /v1/receipts/{decision['session_id']}?token={decision['receipt_token']}")
    payment = decision.get("payment")
    if decision["decision"] == "pay" and payment and payment.get("qr"):
        # The lane display's VietQR as text, so that a driver (or the sandbox) can pay it
        # without --wait.
        print(f'  VietQR: citypass bank pay "{payment["qr"]}"')


def _code(response: httpx.Response) -> int:
    if response.status_code >= 500:
        return EXIT_ERROR
    body: dict[str, Any] = response.json()
    return EXIT_OPEN if body.get("decision") == "open" else EXIT_CLOSED


def provision_command(args: argparse.Namespace) -> int:
    token = os.environ.get("PARKING_ADMIN_TOKEN")
    if not token:
        raise SystemExit("Set PARKING_ADMIN_TOKEN.")
    device_id = args.id or f"{(args.lane or args.lot).lower()}-{uuid.uuid4().hex[:6]}"
    response = httpx.post(
        f"{args.url.rstrip('/')}/v1/devices",
        json={"device_id": device_id, "kind": args.kind, "lot_id": args.lot, "lane_id": args.lane},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    if response.is_error:
        print(f"refused: HTTP {response.status_code} {response.text}")
        return EXIT_ERROR
    device = response.json()
    print(f"export PARKING_DEVICE_ID={device['device_id']}")
    print(f"export PARKING_DEVICE_SECRET={device['secret']}")
    return EXIT_OPEN


def lane_command(args: argparse.Namespace) -> int:
    at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    body: dict[str, Any] = {"lot_id": args.lot, "lane_id": args.lane, "occurred_at": at.isoformat()}
    if args.plate:
        body["plate_read"] = {
            "plate": args.plate,
            "confidence": args.confidence,
            "image_ref": args.image_ref,
        }
    if args.account_qr:
        body["account_qr"] = args.account_qr
    if args.rfid:
        body["rfid_tag"] = args.rfid
    if args.vehicle_type:
        body["vehicle_type"] = args.vehicle_type
    if getattr(args, "offline", False):
        body["offline"] = True
    try:
        with _client(args) as http:
            started = time.perf_counter()
            response = http.post(
                args.path, json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            print(f"{(time.perf_counter() - started) * 1000:.0f} ms")
            decision = response.json()
            _show(decision)
            if getattr(args, "wait", False) and decision.get("decision") == "pay":
                return _wait_for_payment(http, decision)
    except httpx.HTTPError as error:
        print(f"no decision: {error}")
        return EXIT_ERROR
    return _code(response)


def _wait_for_payment(http: httpx.Client, decision: dict[str, Any]) -> int:
    payment = decision["payment"]
    segno.make_qr(payment["qr"], error="m").terminal(compact=True)
    print(f"Pay {payment['amount']:,} VND by VietQR (reference {payment['reference']}):")
    print(f'  citypass bank pay "{payment["qr"]}"')
    print(f"  fallback (debt) allowed after {decision.get('fallback_after')}")
    while True:
        time.sleep(1)
        response = http.get(f"/v1/sessions/{decision['session_id']}/exit-status")
        current = response.json()
        if current.get("decision") == "open":
            _show(current)
            return EXIT_OPEN
        if response.is_error:
            _show(current)
            return EXIT_ERROR


def status_command(args: argparse.Namespace) -> int:
    try:
        with _client(args) as http:
            response = http.get(f"/v1/sessions/{args.session_id}/exit-status")
    except httpx.HTTPError as error:
        print(f"no answer: {error}")
        return EXIT_ERROR
    _show(response.json())
    return _code(response)


def receipt_command(args: argparse.Namespace) -> int:
    """A driver, not a device: `GET /v1/receipts?plate=&code=`, unsigned."""
    try:
        response = httpx.get(
            f"{args.url.rstrip('/')}/v1/receipts",
            params={"plate": args.plate, "code": args.code},
            timeout=10,
        )
    except httpx.HTTPError as error:
        print(f"no answer: {error}")
        return EXIT_ERROR
    receipt: dict[str, Any] = response.json()
    if response.is_error:
        retry = response.headers.get("Retry-After")
        print(f"refused: {receipt.get('code')}: {receipt.get('detail')}")
        if retry:
            print(f"  retry in {retry} s")
        return EXIT_ERROR if response.status_code >= 500 else EXIT_CLOSED
    print(f"{receipt['lot_name']}, {receipt['lot_address']}")
    print(f"  receipt code: {receipt['receipt_code']}   session: {receipt['session_id']}")
    print(f"  {receipt['plate']} ({receipt['vehicle_type']})")
    print(f"  {receipt['entry_at']} → {receipt['exit_at']}  ({receipt['duration_minutes']} min)")
    for line in receipt["lines"]:
        print(f"    {line['description']}: {line['amount']:,} VND")
    print(f"  fee: {receipt['fee']:,} VND   paid: {receipt['paid_amount']:,} VND")
    print(f"  settlement: {receipt['settlement']}")
    if receipt["refunded_amount"]:
        print(f"  refunded: {receipt['refunded_amount']:,} VND")
    if receipt["amount_due"]:
        print(f"  still owed: {receipt['amount_due']:,} VND")
        payment = receipt.get("payment")
        if payment and payment.get("qr"):
            print(f'  VietQR: citypass bank pay "{payment["qr"]}"')
    print(
        f"  reopen (read only): /v1/receipts/{receipt['session_id']}?token={receipt['read_token']}"
    )
    return EXIT_OPEN


def fallback_command(args: argparse.Namespace) -> int:
    try:
        with _client(args) as http:
            response = http.post(
                f"/v1/sessions/{args.session_id}/fallback-exit",
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
    except httpx.HTTPError as error:
        print(f"no answer: {error}")
        return EXIT_ERROR
    _show(response.json())
    return _code(response)
