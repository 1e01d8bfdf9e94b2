-- Moves between accounts that must exist; the balance_not_negative check guards debits
-- (payments_0002).
CREATE OR REPLACE FUNCTION move_balance(p_account uuid, p_delta bigint) RETURNS bigint
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
    $$;
