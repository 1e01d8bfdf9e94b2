-- A hold in one round trip (payments_0002, posted by post_transfer since payments_0006).
-- Slots: %1$s the wallet balance, %2$s expires_at, %3$s created_at.
CREATE OR REPLACE FUNCTION place_hold_once(
    p_lock bigint, p_scope text, p_key text, p_fingerprint text,
    p_hold uuid, p_transfer uuid, p_wallet uuid, p_amount bigint, p_source text,
    p_lot text, p_ttl interval,
    p_escrow uuid, p_escrow_code text, p_escrow_shard smallint,
    p_event uuid, p_topic text, p_event_key text, p_headers jsonb, p_payload bytea,
    p_template text
) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        result idempotent_outcome;
        posted record;
        created timestamptz;
    BEGIN
        result := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF result.outcome IS NOT NULL THEN
            RETURN result;
        END IF;
        SELECT * INTO posted FROM post_transfer(
            p_transfer, 'hold', p_amount, p_wallet, ARRAY['rider_wallet', 'vehicle_wallet'],
            p_escrow, NULL, p_escrow_code, 'holds', NULL, p_escrow_shard,
            p_wallet, p_source, p_lot, NULL, p_hold, NULL, NULL,
            p_event, p_topic, p_event_key, p_headers, p_payload);
        IF posted.refusal IS NOT NULL THEN
            RETURN refused(posted.refusal);
        END IF;
        INSERT INTO holds (id, wallet_account_id, holds_account_id, amount, source, lot_id,
                           hold_transfer_id, expires_at)
        VALUES (p_hold, p_wallet, p_escrow, p_amount, p_source, p_lot, p_transfer,
                posted.posted_at + p_ttl)
        RETURNING created_at INTO created;
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 201,
            convert_to(format(p_template, posted.debit_balance,
                              json_time(posted.posted_at + p_ttl), json_time(created)), 'UTF8'));
    END
    $$;
