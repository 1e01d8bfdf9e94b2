-- The one posting engine of payments: `p_amount` from `p_debit` (an account of one of
-- `p_debit_kinds`) to `p_credit` (an account of one of `p_credit_kinds`, or, with
-- `p_credit_code`, a system account created on its first credit), journaled with its event; or
-- why not in `refusal` (see debit_account, credit_account), with nothing written.
-- Lock order: the wallet first (`p_wallet`), whichever side it is on, then the other account;
-- callers lock a business row (hold, charge, payment request) before (payments_0006).
CREATE OR REPLACE FUNCTION post_transfer(
    p_transfer uuid, p_kind text, p_amount bigint,
    p_debit uuid, p_debit_kinds text[], p_credit uuid, p_credit_kinds text[],
    p_credit_code text, p_credit_kind text, p_credit_owner text, p_credit_shard smallint,
    p_wallet uuid, p_source text, p_lot text, p_original uuid, p_hold uuid,
    p_payment_request uuid, p_bank_notification uuid,
    p_event uuid, p_topic text, p_event_key text, p_headers jsonb, p_payload bytea,
    OUT debit_balance bigint, OUT credit_balance bigint, OUT posted_at timestamptz,
    OUT refusal jsonb
) LANGUAGE plpgsql AS $$
    DECLARE
        leg record;
    BEGIN
        IF p_wallet = p_credit THEN  -- the wallet is credited: it goes first
            SELECT * INTO leg FROM credit_account(p_credit, p_credit_kinds, p_amount);
            refusal := leg.refusal;
            IF refusal IS NOT NULL THEN
                RETURN;
            END IF;
            credit_balance := leg.new_balance;
            SELECT * INTO leg FROM debit_account(p_debit, p_debit_kinds, p_amount);
            refusal := leg.refusal;
            IF refusal IS NOT NULL THEN  -- the credit is taken back: nothing written
                PERFORM credit_account(p_credit, p_credit_kinds, -p_amount);
                credit_balance := NULL;
                RETURN;
            END IF;
            debit_balance := leg.new_balance;
        ELSE
            SELECT * INTO leg FROM debit_account(p_debit, p_debit_kinds, p_amount);
            refusal := leg.refusal;
            IF refusal IS NOT NULL THEN
                RETURN;
            END IF;
            debit_balance := leg.new_balance;
            IF p_credit_code IS NOT NULL THEN
                credit_balance := credit_system(p_credit, p_credit_code, p_credit_kind,
                                                p_credit_owner, p_credit_shard, p_amount);
            ELSE
                SELECT * INTO leg FROM credit_account(p_credit, p_credit_kinds, p_amount);
                refusal := leg.refusal;
                IF refusal IS NOT NULL THEN  -- the debit is given back: nothing written
                    PERFORM credit_account(p_debit, p_debit_kinds, p_amount);
                    debit_balance := NULL;
                    RETURN;
                END IF;
                credit_balance := leg.new_balance;
            END IF;
        END IF;
        posted_at := journal(p_transfer, p_kind, p_amount, p_debit, p_credit, p_wallet, p_source,
                             p_lot, p_original, p_hold, p_payment_request, p_bank_notification,
                             p_event, p_topic, p_event_key, p_headers, p_payload);
    END
    $$;
