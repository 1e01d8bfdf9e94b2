-- All of the hold back to its wallet (payments_0002, posted by release_hold since
-- payments_0006). Slots: %1$s the wallet balance, %2$s settled_at.
CREATE OR REPLACE FUNCTION void_hold_once(
    p_lock bigint, p_scope text, p_key text, p_fingerprint text,
    p_hold uuid, p_release uuid, p_event uuid, p_headers jsonb, p_payload bytea,
    p_topic text, p_event_key text, p_template text
) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        result idempotent_outcome;
        pending record;
        h holds;
        wallet_balance bigint;
        settled timestamptz;
    BEGIN
        result := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF result.outcome IS NOT NULL THEN
            RETURN result;
        END IF;
        IF p_release IS NULL THEN  -- the hold did not exist when the caller looked
            RETURN refused(jsonb_build_object('code', 'hold_not_found'));
        END IF;
        SELECT * INTO pending FROM pending_hold(p_hold, false);
        IF pending.refusal IS NOT NULL THEN
            RETURN refused(pending.refusal);
        END IF;
        h := pending.hold;
        wallet_balance := release_hold(h, h.amount, p_release, p_event, p_topic, p_event_key,
                                       p_headers, p_payload);
        UPDATE holds SET status = 'voided', release_transfer_id = p_release, settled_at = now()
         WHERE id = h.id
        RETURNING settled_at INTO settled;
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 200,
            convert_to(format(p_template, wallet_balance, json_time(settled)), 'UTF8'));
    END
    $$;
