"""The one posting engine (`post_transfer`, services/payments/sql/) on any pair of accounts:
either the transfer is journaled with its two postings and its event and both balances move
by its amount, or it is refused with nothing written, whichever side the wallet is on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.db import Database

WALLETS = ["rider_wallet", "vehicle_wallet"]

_ACCOUNT = "INSERT INTO accounts (id, code, kind, balance) VALUES ($1, $2, $3, $4)"
_POST = (
    "SELECT * FROM post_transfer($1, 'refund', $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9,"
    " NULL, NULL, NULL, NULL, NULL, NULL, $10, 'payments.ledger', 'k', '[]', '\\x00')"
)


@dataclass(frozen=True)
class Side:
    kind: str | None  # None: no such account
    balance: int
    kinds: tuple[str, ...]  # what the transfer asks for


def sides(kinds: list[str]) -> st.SearchStrategy[Side]:
    return st.builds(
        Side,
        st.sampled_from([*kinds, "holds", None]),
        st.integers(0, 500),
        st.just(tuple(kinds)),
    )


async def _balance(connection: Any, account: uuid.UUID) -> int | None:
    value = await connection.fetchval("SELECT balance FROM accounts WHERE id = $1", account)
    return None if value is None else int(value)


class TestPostTransfer:
    @settings(max_examples=80)
    @given(
        debit=sides(["parking_revenue", *WALLETS]),
        credit=sides(WALLETS),
        amount=st.integers(1, 600),
        system_credit=st.booleans(),
        wallet_credited=st.booleans(),
    )
    async def test_posts_all_or_nothing(
        self,
        ledger_db: Database,
        debit: Side,
        credit: Side,
        amount: int,
        system_credit: bool,
        wallet_credited: bool,
    ) -> None:
        debit_id, credit_id, transfer_id, event_id = (uuid.uuid4() for _ in range(4))
        system_credit = system_credit and not wallet_credited
        pool = await ledger_db.raw_pool()
        async with pool.acquire() as connection:
            transaction = connection.transaction()
            await transaction.start()
            try:
                for side, account in ((debit, debit_id), (credit, credit_id)):
                    if side.kind is not None and not (system_credit and side is credit):
                        await connection.execute(
                            _ACCOUNT, account, f"test:{account}", side.kind, side.balance
                        )
                row = await connection.fetchrow(
                    _POST,
                    transfer_id,
                    amount,
                    debit_id,
                    list(debit.kinds),
                    credit_id,
                    None if system_credit else list(credit.kinds),
                    f"test:{credit_id}" if system_credit else None,
                    "parking_revenue" if system_credit else None,
                    credit_id if wallet_credited else debit_id,
                    event_id,
                )
                assert row is not None
                transfers = await connection.fetchval(
                    "SELECT count(*) FROM transfers WHERE id = $1", transfer_id
                )
                postings = await connection.fetchval(
                    "SELECT coalesce(sum(amount), 0) * 10 + count(*) FROM postings"
                    " WHERE transfer_id = $1",
                    transfer_id,
                )
                events = await connection.fetchval(
                    "SELECT count(*) FROM outbox WHERE event_id = $1", event_id
                )
                after = (
                    await _balance(connection, debit_id),
                    await _balance(connection, credit_id),
                )
            finally:
                await transaction.rollback()
        debit_known = debit.kind in debit.kinds
        credit_known = system_credit or credit.kind in credit.kinds
        short = {"code": "insufficient_funds", "account_id": str(debit_id), "kind": debit.kind}
        legs = [
            (debit_known, debit_id, short | {"balance": debit.balance}, debit.balance < amount),
            (credit_known, credit_id, None, False),
        ]
        expected: dict[str, Any] | None = None
        for known, account, shortage, too_short in legs[:: -1 if wallet_credited else 1]:
            if not known:  # judged wallet first: the first unknown side is named
                expected = {"code": "unknown_account", "account_id": str(account)}
                break
            if too_short:
                expected = shortage
                break
        refusal = None if row["refusal"] is None else orjson.loads(row["refusal"])
        assert refusal == expected
        if refusal is None:
            assert (transfers, postings, events) == (1, 2, 1)
            credited = amount if system_credit else credit.balance + amount
            assert after == (debit.balance - amount, credited)
            assert (row["debit_balance"], row["credit_balance"]) == after
        else:
            assert (transfers, postings, events) == (0, 0, 0), "a refusal writes nothing"
            assert after == (
                debit.balance if debit.kind else None,
                None if system_credit or credit.kind is None else credit.balance,
            )
