-- `p_amount` of a locked hold back to its wallet (a release transfer); the wallet's new
-- balance. Nothing can refuse it but a corrupted ledger, which it raises (payments_0006).
CREATE OR REPLACE FUNCTION release_hold(
    h holds, p_amount bigint, p_release uuid, p_event uuid, p_topic text, p_event_key text,
    p_headers jsonb, p_payload bytea
) RETURNS bigint LANGUAGE plpgsql AS $$
    DECLARE
        posted record;
    BEGIN
        SELECT * INTO posted FROM post_transfer(
            p_release, 'release', p_amount, h.holds_account_id, ARRAY['holds'],
            h.wallet_account_id, ARRAY['rider_wallet', 'vehicle_wallet'], NULL, NULL, NULL, NULL,
            h.wallet_account_id, h.source, h.lot_id, h.hold_transfer_id, h.id, NULL, NULL,
            p_event, p_topic, p_event_key, p_headers, p_payload);
        IF posted.refusal IS NOT NULL THEN
            RAISE EXCEPTION 'release of hold % refused: %', h.id, posted.refusal
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN posted.credit_balance;
    END
    $$;
