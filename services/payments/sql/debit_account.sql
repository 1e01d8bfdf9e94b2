-- Takes `p_amount` from an account of one of `p_kinds`, or says why not (nothing written then):
-- unknown_account, or insufficient_funds with the balance and kind (a short wallet is its
-- owner's refusal, any other short account a corrupted ledger). The row is locked before it is
-- judged, so a refusal states a balance that was true (payments_0006).
CREATE OR REPLACE FUNCTION debit_account(
    p_account uuid, p_kinds text[], p_amount bigint, OUT new_balance bigint, OUT refusal jsonb
) LANGUAGE plpgsql AS $$
    DECLARE
        found_row record;
    BEGIN
        UPDATE accounts a SET balance = a.balance - p_amount
         WHERE a.id = p_account AND a.kind = ANY(p_kinds)
           AND (a.allow_negative OR a.balance >= p_amount)
        RETURNING a.balance INTO new_balance;
        IF FOUND THEN
            RETURN;
        END IF;
        SELECT a.kind, a.balance, a.allow_negative INTO found_row
          FROM accounts a WHERE a.id = p_account FOR UPDATE;
        IF NOT FOUND OR NOT found_row.kind = ANY(p_kinds) THEN
            refusal := jsonb_build_object('code', 'unknown_account', 'account_id', p_account);
        ELSIF NOT found_row.allow_negative AND found_row.balance < p_amount THEN
            refusal := jsonb_build_object('code', 'insufficient_funds', 'account_id', p_account,
                                          'kind', found_row.kind, 'balance', found_row.balance);
        ELSE  -- a credit committed since the first try
            UPDATE accounts a SET balance = a.balance - p_amount WHERE a.id = p_account
            RETURNING a.balance INTO new_balance;
        END IF;
    END
    $$;
