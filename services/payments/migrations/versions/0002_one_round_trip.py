"""Charges, holds and parking payment requests in one round trip: PL/pgSQL functions.

Each `*_once` function does what the request's transaction did statement by statement: it
claims the Idempotency-Key (`idempotency_claim`), checks the rules, posts the transfer with
its postings and outbox event, renders the answer from the template it was given and stores
it with the key (`idempotency_store`). Called alone in autocommit, effect and key commit
together in the same round trip. A refusal writes nothing and says why in its outcome.

Lock order as in services.payments.repository: the business row (hold), then the wallet,
then system accounts (holds, revenue).

Revision ID: payments_0002
Revises: payments_0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

from shared.idempotency import GUARD_FUNCTIONS

revision = "payments_0002"
down_revision = "payments_0001"
branch_labels = None
depends_on = None

WALLET_KINDS = "ARRAY['rider_wallet', 'vehicle_wallet']"

LEDGER_FUNCTIONS = (
    """
    CREATE FUNCTION refused(p_refusal jsonb) RETURNS idempotent_outcome
    LANGUAGE sql IMMUTABLE AS $$
        SELECT ROW(p_refusal ->> 'code', NULL, NULL, NULL, p_refusal)::idempotent_outcome
    $$
    """,
    # Take `p_amount` from a wallet, or say why not (nothing written then). The row is locked
    # before it is judged, so a refusal states a balance that was true.
    f"""
    CREATE FUNCTION debit_wallet(
        p_account uuid, p_amount bigint, OUT new_balance bigint, OUT refusal jsonb
    ) LANGUAGE plpgsql AS $$
    DECLARE
        found_row record;
    BEGIN
        UPDATE accounts a SET balance = a.balance - p_amount
         WHERE a.id = p_account AND a.kind = ANY({WALLET_KINDS})
           AND (a.allow_negative OR a.balance >= p_amount)
        RETURNING a.balance INTO new_balance;
        IF FOUND THEN
            RETURN;
        END IF;
        SELECT a.kind, a.balance, a.allow_negative INTO found_row
          FROM accounts a WHERE a.id = p_account FOR UPDATE;
        IF NOT FOUND OR NOT found_row.kind = ANY({WALLET_KINDS}) THEN
            refusal := jsonb_build_object('code', 'unknown_account');
        ELSIF NOT found_row.allow_negative AND found_row.balance < p_amount THEN
            refusal := jsonb_build_object('code', 'insufficient_funds',
                                          'balance', found_row.balance);
        ELSE  -- a credit committed since the first try
            UPDATE accounts a SET balance = a.balance - p_amount WHERE a.id = p_account
            RETURNING a.balance INTO new_balance;
        END IF;
    END
    $$
    """,
    # A revenue or holds sub-account, created on its first credit.
    """
    CREATE FUNCTION credit_system(
        p_account uuid, p_code text, p_kind text, p_owner text, p_shard smallint, p_amount bigint
    ) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE accounts a SET balance = a.balance + p_amount WHERE a.id = p_account;
        IF NOT FOUND THEN
            INSERT INTO accounts AS a (id, code, kind, owner_id, shard, balance)
            VALUES (p_account, p_code, p_kind, p_owner, p_shard, p_amount)
            ON CONFLICT (id) DO UPDATE SET balance = a.balance + excluded.balance;
        END IF;
    END
    $$
    """,
    # Moves between accounts that must exist; the balance_not_negative check guards debits.
    """
    CREATE FUNCTION move_balance(p_account uuid, p_delta bigint) RETURNS bigint
    LANGUAGE plpgsql AS $$
    DECLARE
        result bigint;
    BEGIN
        UPDATE accounts a SET balance = a.balance + p_delta WHERE a.id = p_account
        RETURNING a.balance INTO result;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account % is missing', p_account
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN result;
    END
    $$
    """,
    # The journal row, its two postings and its transfer.posted event.
    """
    CREATE FUNCTION journal(
        p_transfer uuid, p_kind text, p_amount bigint, p_debit uuid, p_credit uuid,
        p_wallet uuid, p_source text, p_lot text, p_original uuid, p_hold uuid,
        p_event uuid, p_topic text, p_event_key text, p_headers jsonb, p_payload bytea
    ) RETURNS timestamptz LANGUAGE plpgsql AS $$
    DECLARE
        posted timestamptz;
    BEGIN
        INSERT INTO transfers (id, kind, amount, debit_account_id, credit_account_id,
                               wallet_account_id, source, lot_id, original_transfer_id, hold_id)
        VALUES (p_transfer, p_kind, p_amount, p_debit, p_credit, p_wallet, p_source, p_lot,
                p_original, p_hold)
        RETURNING posted_at INTO posted;
        INSERT INTO postings (transfer_id, account_id, amount)
        VALUES (p_transfer, p_debit, -p_amount), (p_transfer, p_credit, p_amount);
        INSERT INTO outbox (event_id, topic, key, headers, payload)
        VALUES (p_event, p_topic, p_event_key, p_headers, p_payload);
        RETURN posted;
    END
    $$
    """,
)

ONCE_FUNCTIONS = (
    # The answer's template slots: %1$s the wallet balance, %2$s posted_at.
    """
    CREATE FUNCTION charge_once(
        p_lock bigint, p_scope text, p_key text, p_fingerprint text,
        p_transfer uuid, p_wallet uuid, p_amount bigint, p_source text, p_lot text,
        p_revenue uuid, p_revenue_code text, p_revenue_kind text, p_revenue_shard smallint,
        p_event uuid, p_topic text, p_event_key text, p_headers jsonb, p_payload bytea,
        p_template text
    ) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        result idempotent_outcome;
        debited record;
        posted timestamptz;
    BEGIN
        result := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF result.outcome IS NOT NULL THEN
            RETURN result;
        END IF;
        SELECT * INTO debited FROM debit_wallet(p_wallet, p_amount);
        IF debited.refusal IS NOT NULL THEN
            RETURN refused(debited.refusal);
        END IF;
        PERFORM credit_system(p_revenue, p_revenue_code, p_revenue_kind, p_lot, p_revenue_shard,
                              p_amount);
        posted := journal(p_transfer, 'charge', p_amount, p_wallet, p_revenue, p_wallet,
                          p_source, p_lot, NULL, NULL, p_event, p_topic, p_event_key, p_headers,
                          p_payload);
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 201,
            convert_to(format(p_template, debited.new_balance, json_time(posted)), 'UTF8'));
    END
    $$
    """,
    # Slots: %1$s the wallet balance, %2$s expires_at, %3$s created_at.
    """
    CREATE FUNCTION place_hold_once(
        p_lock bigint, p_scope text, p_key text, p_fingerprint text,
        p_hold uuid, p_transfer uuid, p_wallet uuid, p_amount bigint, p_source text,
        p_lot text, p_ttl interval,
        p_escrow uuid, p_escrow_code text, p_escrow_shard smallint,
        p_event uuid, p_topic text, p_event_key text, p_headers jsonb, p_payload bytea,
        p_template text
    ) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        result idempotent_outcome;
        debited record;
        posted timestamptz;
        created timestamptz;
    BEGIN
        result := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF result.outcome IS NOT NULL THEN
            RETURN result;
        END IF;
        SELECT * INTO debited FROM debit_wallet(p_wallet, p_amount);
        IF debited.refusal IS NOT NULL THEN
            RETURN refused(debited.refusal);
        END IF;
        PERFORM credit_system(p_escrow, p_escrow_code, 'holds', NULL, p_escrow_shard, p_amount);
        posted := journal(p_transfer, 'hold', p_amount, p_wallet, p_escrow, p_wallet, p_source,
                          p_lot, NULL, p_hold, p_event, p_topic, p_event_key, p_headers,
                          p_payload);
        INSERT INTO holds (id, wallet_account_id, holds_account_id, amount, source, lot_id,
                           hold_transfer_id, expires_at)
        VALUES (p_hold, p_wallet, p_escrow, p_amount, p_source, p_lot, p_transfer,
                posted + p_ttl)
        RETURNING created_at INTO created;
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 201,
            convert_to(format(p_template, debited.new_balance, json_time(posted + p_ttl),
                              json_time(created)), 'UTF8'));
    END
    $$
    """,
    # The hold's settled state, or why it cannot be settled (nothing written then).
    """
    CREATE FUNCTION pending_hold(p_hold uuid, p_check_expiry boolean, OUT hold holds,
                                 OUT refusal jsonb) LANGUAGE plpgsql AS $$
    BEGIN
        SELECT * INTO hold FROM holds h WHERE h.id = p_hold FOR UPDATE;
        IF NOT FOUND THEN
            refusal := jsonb_build_object('code', 'hold_not_found');
        ELSIF hold.status <> 'pending' THEN
            refusal := jsonb_build_object('code', 'hold_not_pending', 'hold_status', hold.status);
        ELSIF p_check_expiry AND hold.expires_at <= now() THEN
            refusal := jsonb_build_object('code', 'hold_expired');
        END IF;
    END
    $$
    """,
    # Takes `p_amount` of the hold as revenue and gives the rest back (the release transfer,
    # when there is a rest). Slots: %1$s the wallet balance, %2$s settled_at.
    """
    CREATE FUNCTION capture_hold_once(
        p_lock bigint, p_scope text, p_key text, p_fingerprint text,
        p_hold uuid, p_amount bigint,
        p_capture uuid, p_revenue uuid, p_revenue_code text, p_revenue_kind text,
        p_revenue_shard smallint, p_capture_event uuid, p_capture_headers jsonb,
        p_capture_payload bytea,
        p_release uuid, p_release_event uuid, p_release_headers jsonb, p_release_payload bytea,
        p_topic text, p_event_key text, p_template text
    ) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        result idempotent_outcome;
        pending record;
        h holds;
        wallet_balance bigint;
        settled timestamptz;
    BEGIN
        result := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF result.outcome IS NOT NULL THEN
            RETURN result;
        END IF;
        IF p_capture IS NULL THEN  -- the hold did not exist when the caller looked
            RETURN refused(jsonb_build_object('code', 'hold_not_found'));
        END IF;
        SELECT * INTO pending FROM pending_hold(p_hold, true);
        IF pending.refusal IS NOT NULL THEN
            RETURN refused(pending.refusal);
        END IF;
        h := pending.hold;
        IF p_amount > h.amount THEN
            RETURN refused(jsonb_build_object('code', 'capture_exceeds_hold', 'held', h.amount));
        END IF;
        SELECT a.balance INTO wallet_balance FROM accounts a
         WHERE a.id = h.wallet_account_id FOR UPDATE;
        PERFORM move_balance(h.holds_account_id, -h.amount);
        PERFORM credit_system(p_revenue, p_revenue_code, p_revenue_kind, h.lot_id,
                              p_revenue_shard, p_amount);
        PERFORM journal(p_capture, 'capture', p_amount, h.holds_account_id, p_revenue,
                        h.wallet_account_id, h.source, h.lot_id, h.hold_transfer_id, h.id,
                        p_capture_event, p_topic, p_event_key, p_capture_headers,
                        p_capture_payload);
        IF h.amount > p_amount THEN
            wallet_balance := move_balance(h.wallet_account_id, h.amount - p_amount);
            PERFORM journal(p_release, 'release', h.amount - p_amount, h.holds_account_id,
                            h.wallet_account_id, h.wallet_account_id, h.source, h.lot_id,
                            h.hold_transfer_id, h.id, p_release_event, p_topic, p_event_key,
                            p_release_headers, p_release_payload);
        END IF;
        UPDATE holds SET status = 'captured', captured_amount = p_amount,
                         capture_transfer_id = p_capture,
                         release_transfer_id = CASE WHEN h.amount > p_amount THEN p_release END,
                         settled_at = now()
         WHERE id = h.id
        RETURNING settled_at INTO settled;
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 200,
            convert_to(format(p_template, wallet_balance, json_time(settled)), 'UTF8'));
    END
    $$
    """,
    # All of the hold back to its wallet. Slots: %1$s the wallet balance, %2$s settled_at.
    """
    CREATE FUNCTION void_hold_once(
        p_lock bigint, p_scope text, p_key text, p_fingerprint text,
        p_hold uuid, p_release uuid, p_event uuid, p_headers jsonb, p_payload bytea,
        p_topic text, p_event_key text, p_template text
    ) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        result idempotent_outcome;
        pending record;
        h holds;
        wallet_balance bigint;
        settled timestamptz;
    BEGIN
        result := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF result.outcome IS NOT NULL THEN
            RETURN result;
        END IF;
        IF p_release IS NULL THEN  -- the hold did not exist when the caller looked
            RETURN refused(jsonb_build_object('code', 'hold_not_found'));
        END IF;
        SELECT * INTO pending FROM pending_hold(p_hold, false);
        IF pending.refusal IS NOT NULL THEN
            RETURN refused(pending.refusal);
        END IF;
        h := pending.hold;
        wallet_balance := move_balance(h.wallet_account_id, h.amount);
        PERFORM move_balance(h.holds_account_id, -h.amount);
        PERFORM journal(p_release, 'release', h.amount, h.holds_account_id, h.wallet_account_id,
                        h.wallet_account_id, h.source, h.lot_id, h.hold_transfer_id, h.id,
                        p_event, p_topic, p_event_key, p_headers, p_payload);
        UPDATE holds SET status = 'voided', release_transfer_id = p_release, settled_at = now()
         WHERE id = h.id
        RETURNING settled_at INTO settled;
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 200,
            convert_to(format(p_template, wallet_balance, json_time(settled)), 'UTF8'));
    END
    $$
    """,
    # A VietQR payment request for a parking fee. Slot: %1$s created_at.
    """
    CREATE FUNCTION parking_payment_request_once(
        p_lock bigint, p_scope text, p_key text, p_fingerprint text,
        p_request uuid, p_reference text, p_amount bigint, p_lot text, p_session text,
        p_qr text, p_template text
    ) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        result idempotent_outcome;
        created timestamptz;
    BEGIN
        result := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF result.outcome IS NOT NULL THEN
            RETURN result;
        END IF;
        INSERT INTO payment_requests (id, reference, purpose, amount, lot_id, parking_session_id,
                                      qr_payload)
        VALUES (p_request, p_reference, 'parking_fee', p_amount, p_lot, p_session, p_qr)
        RETURNING created_at INTO created;
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 201,
            convert_to(format(p_template, json_time(created)), 'UTF8'));
    END
    $$
    """,
)

DROPPED = (
    "FUNCTION parking_payment_request_once",
    "FUNCTION void_hold_once",
    "FUNCTION capture_hold_once",
    "FUNCTION pending_hold",
    "FUNCTION place_hold_once",
    "FUNCTION charge_once",
    "FUNCTION journal",
    "FUNCTION move_balance",
    "FUNCTION credit_system",
    "FUNCTION debit_wallet",
    "FUNCTION refused",
    "FUNCTION json_time",
    "FUNCTION idempotency_store",
    "FUNCTION idempotency_claim",
    "TYPE idempotent_outcome",
)


def upgrade() -> None:
    for statement in (*GUARD_FUNCTIONS, *LEDGER_FUNCTIONS, *ONCE_FUNCTIONS):
        op.execute(statement)


def downgrade() -> None:
    for dropped in DROPPED:
        op.execute(f"DROP {dropped}")
