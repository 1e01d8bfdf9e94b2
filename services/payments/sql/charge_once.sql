-- A charge in one round trip (payments_0002, posted by post_transfer since payments_0006). The
-- answer's template slots: %1$s the wallet balance, %2$s posted_at.
CREATE OR REPLACE FUNCTION charge_once(
    p_lock bigint, p_scope text, p_key text, p_fingerprint text,
    p_transfer uuid, p_wallet uuid, p_amount bigint, p_source text, p_lot text,
    p_revenue uuid, p_revenue_code text, p_revenue_kind text, p_revenue_shard smallint,
    p_event uuid, p_topic text, p_event_key text, p_headers jsonb, p_payload bytea,
    p_template text
) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        result idempotent_outcome;
        posted record;
    BEGIN
        result := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF result.outcome IS NOT NULL THEN
            RETURN result;
        END IF;
        SELECT * INTO posted FROM post_transfer(
            p_transfer, 'charge', p_amount, p_wallet, ARRAY['rider_wallet', 'vehicle_wallet'],
            p_revenue, NULL, p_revenue_code, p_revenue_kind, p_lot, p_revenue_shard,
            p_wallet, p_source, p_lot, NULL, NULL, NULL, NULL,
            p_event, p_topic, p_event_key, p_headers, p_payload);
        IF posted.refusal IS NOT NULL THEN
            RETURN refused(posted.refusal);
        END IF;
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 201,
            convert_to(format(p_template, posted.debit_balance, json_time(posted.posted_at)),
                       'UTF8'));
    END
    $$;
