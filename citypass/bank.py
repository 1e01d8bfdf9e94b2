"""`citypass bank`: a sandbox that plays the bank for VietQR payments, and the ledger check.

citypass bank pay "<VietQR>" [--amount N]   parse the QR (CRC checked), send the signed
                                            notification the bank would send
citypass bank check-ledger                  sum of postings is 0, balances match postings
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from services.payments import bank_signature
from services.payments.schemas import BankNotification
from services.payments.service import checks
from services.payments.settings import PaymentsSettings
from shared.db import Database
from shared.vietqr import VietQR, VietQRError, decode


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bank = subparsers.add_parser(
        "bank",
        help="bank sandbox (pay a VietQR) and ledger checks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = bank.add_subparsers(dest="bank_command", required=True)

    pay = commands.add_parser(
        "pay", help="pay a VietQR as the bank would: send its signed notification"
    )
    pay.add_argument("qr", help="the VietQR payload, as scanned")
    pay.add_argument("--amount", type=int, help="transfer this many VND instead of the QR's")
    pay.add_argument(
        "--payments-url", help="default: http://127.0.0.1:<PAYMENTS_PORT, 8004>", default=None
    )
    pay.add_argument("--secret", help="webhook secret; default: PAYMENTS_BANK_WEBHOOK_SECRET")
    pay.add_argument("--transaction-id", help="the bank's transaction id; default: a new one")
    pay.set_defaults(func=pay_command)

    check = commands.add_parser(
        "check-ledger", help="check the ledger invariants straight in PostgreSQL"
    )
    check.add_argument("--database-url", help="default: PAYMENTS_DATABASE_URL")
    check.set_defaults(func=check_ledger_command)


def new_transaction_id() -> str:
    return f"FT{datetime.now(UTC):%y%m%d}{secrets.randbelow(10**10):010d}"


def _describe_answer(response: httpx.Response) -> str:
    try:
        answer: dict[str, Any] = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if response.is_success:
        outcome = answer.get("outcome")
        if answer.get("duplicate"):
            return f"already received earlier (first outcome: {outcome})"
        if outcome == "suspense":
            return f"not matched ({answer.get('cause')}): the money is in the suspense account"
        return f"credited (transfer {answer.get('transfer_id')})"
    return f"refused, HTTP {response.status_code} {answer.get('code')}: {answer.get('detail')}"


def bank_notification(
    qr: VietQR, amount: int, transaction_id: str | None = None
) -> BankNotification:
    """What the bank reports after a customer paid this VietQR."""
    return BankNotification(
        transaction_id=transaction_id or new_transaction_id(),
        amount=amount,
        bank_bin=qr.bank_bin,
        account=qr.account,
        reference=qr.reference,
        description=qr.purpose,
        occurred_at=datetime.now(UTC),
    )


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers the bank sends a notification with: its timestamp (now unless given) and
    its signature of the body."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        bank_signature.TIMESTAMP_HEADER: stamp,
        bank_signature.SIGNATURE_HEADER: bank_signature.sign(secret, stamp, body),
    }


def send_notification(
    notification: BankNotification, payments_url: str, secret: str
) -> httpx.Response:
    """Deliver a notification the way the bank does: signed, with its timestamp."""
    body = notification.model_dump_json().encode()
    return httpx.post(
        f"{payments_url.rstrip('/')}/v1/bank/notifications",
        content=body,
        headers=signed_headers(secret, body),
        timeout=10,
    )


def pay_command(args: argparse.Namespace) -> int:
    settings = PaymentsSettings()
    try:
        qr = decode(args.qr)
    except VietQRError as error:
        print(f"Not a valid VietQR ({error.code}): {error.message}")
        return 2
    amount = args.amount if args.amount is not None else qr.amount
    if amount is None:
        print("This static VietQR has no amount: give one with --amount.")
        return 2
    notification = bank_notification(qr, amount, args.transaction_id)
    secret = args.secret or settings.bank_webhook_secret.get_secret_value()
    url = args.payments_url or f"http://127.0.0.1:{settings.port}"
    print(
        f"Bank transaction {notification.transaction_id}: {amount} VND to"
        f" {qr.bank_bin}/{qr.account}, reference {qr.reference or '(none)'}"
    )
    try:
        response = send_notification(notification, url, secret)
    except httpx.HTTPError as error:
        print(f"Payments at {url} did not answer: {error}")
        return 1
    print(f"Payments: {_describe_answer(response)}")
    return 0 if response.is_success else 1


async def _check_ledger(database_url: str) -> bool:
    database = Database(database_url, "payments", pool_size=1)
    try:
        async with database.transaction() as session:
            result = await checks.check_ledger(session)
    finally:
        await database.close()
    print(
        f"{result.transfers_checked} transfers, {result.accounts_checked} accounts:"
        f" postings sum to {result.postings_total}, balances to {result.balances_total}"
    )
    for transfer in result.unbalanced_transfers:
        print(
            f"  unbalanced transfer {transfer.transfer_id}:"
            f" {transfer.legs} postings summing to {transfer.postings_total}"
        )
    for account in result.mismatched_accounts:
        print(
            f"  account {account.code}: balance {account.balance}"
            f" but postings sum to {account.postings_total}"
        )
    print("Ledger OK" if result.ok else "LEDGER BROKEN")
    return result.ok


def check_ledger_command(args: argparse.Namespace) -> int:
    database_url = args.database_url or PaymentsSettings().database_url
    return 0 if asyncio.run(_check_ledger(database_url)) else 1
