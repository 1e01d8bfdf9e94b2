-- Takes `p_amount` of the hold as revenue and gives the rest back (the release transfer,
-- when there is a rest) (payments_0002, posted by post_transfer since payments_0006).
-- Slots: %1$s the wallet balance, %2$s settled_at.
CREATE OR REPLACE FUNCTION capture_hold_once(
    p_lock bigint, p_scope text, p_key text, p_fingerprint text,
    p_hold uuid, p_amount bigint,
    p_revenue uuid, p_revenue_code text, p_revenue_kind text, p_revenue_shard smallint,
    p_capture uuid, p_capture_event uuid, p_capture_headers jsonb, p_capture_payload bytea,
    p_release uuid, p_release_event uuid, p_release_headers jsonb, p_release_payload bytea,
    p_topic text, p_event_key text, p_template text
) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        claimed record;
        posted record;
        h holds;
        wallet_balance bigint;
        settled timestamptz;
    BEGIN
        SELECT * INTO claimed FROM claim_hold(p_lock, p_scope, p_key, p_fingerprint, p_hold,
                                              p_capture IS NOT NULL, true);
        IF (claimed.outcome).outcome IS NOT NULL THEN
            RETURN claimed.outcome;
        END IF;
        h := claimed.hold;
        IF p_amount > h.amount THEN
            RETURN refused(jsonb_build_object('code', 'capture_exceeds_hold', 'held', h.amount));
        END IF;
        SELECT a.balance INTO wallet_balance FROM accounts a
         WHERE a.id = h.wallet_account_id FOR UPDATE;
        SELECT * INTO posted FROM post_transfer(
            p_capture, 'capture', p_amount, h.holds_account_id, ARRAY['holds'],
            p_revenue, NULL, p_revenue_code, p_revenue_kind, h.lot_id, p_revenue_shard,
            h.wallet_account_id, h.source, h.lot_id, h.hold_transfer_id, h.id, NULL, NULL,
            p_capture_event, p_topic, p_event_key, p_capture_headers, p_capture_payload);
        IF posted.refusal IS NOT NULL THEN
            RETURN refused(posted.refusal);
        END IF;
        IF h.amount > p_amount THEN
            wallet_balance := release_hold(h, h.amount - p_amount, p_release, p_release_event,
                                           p_topic, p_event_key, p_release_headers,
                                           p_release_payload);
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
    $$;
