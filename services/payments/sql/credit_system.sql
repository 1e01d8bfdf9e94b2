-- A revenue, holds, clearing or suspense account, created on its first credit; its new
-- balance (payments_0002, returns it since payments_0006).
CREATE OR REPLACE FUNCTION credit_system(
    p_account uuid, p_code text, p_kind text, p_owner text, p_shard smallint, p_amount bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
    DECLARE
        result bigint;
    BEGIN
        UPDATE accounts a SET balance = a.balance + p_amount WHERE a.id = p_account
        RETURNING a.balance INTO result;
        IF NOT FOUND THEN
            INSERT INTO accounts AS a (id, code, kind, owner_id, shard, balance)
            VALUES (p_account, p_code, p_kind, p_owner, p_shard, p_amount)
            ON CONFLICT (id) DO UPDATE SET balance = a.balance + excluded.balance
            RETURNING a.balance INTO result;
        END IF;
        RETURN result;
    END
    $$;
