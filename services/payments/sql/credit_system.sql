-- A revenue or holds sub-account, created on its first credit (payments_0002).
CREATE OR REPLACE FUNCTION credit_system(
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
    $$;
