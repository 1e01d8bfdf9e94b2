-- Gives `p_amount` to an existing account of one of `p_kinds`, or says it is unknown (nothing
-- written then) (payments_0006).
CREATE OR REPLACE FUNCTION credit_account(
    p_account uuid, p_kinds text[], p_amount bigint, OUT new_balance bigint, OUT refusal jsonb
) LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE accounts a SET balance = a.balance + p_amount
         WHERE a.id = p_account AND a.kind = ANY(p_kinds)
        RETURNING a.balance INTO new_balance;
        IF NOT FOUND THEN
            refusal := jsonb_build_object('code', 'unknown_account', 'account_id', p_account);
        END IF;
    END
    $$;
