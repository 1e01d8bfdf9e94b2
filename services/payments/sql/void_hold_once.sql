-- All of the hold back to its wallet (payments_0002, posted by release_hold since
-- payments_0006). Slots: %1$s the wallet balance, %2$s settled_at.
CREATE OR REPLACE FUNCTION void_hold_once(
    p_lock bigint, p_scope text, p_key text, p_fingerprint text,
    p_hold uuid, p_release uuid, p_event uuid, p_headers jsonb, p_payload bytea,
    p_topic text, p_event_key text, p_template text
) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        claimed record;
        wallet_balance bigint;
        settled timestamptz;
    BEGIN
        SELECT * INTO claimed FROM claim_hold(p_lock, p_scope, p_key, p_fingerprint, p_hold,
                                              p_release IS NOT NULL, false);
        IF (claimed.outcome).outcome IS NOT NULL THEN
            RETURN claimed.outcome;
        END IF;
        wallet_balance := release_hold(claimed.hold, (claimed.hold).amount, p_release, p_event,
                                       p_topic, p_event_key, p_headers, p_payload);
        UPDATE holds SET status = 'voided', release_transfer_id = p_release, settled_at = now()
         WHERE id = p_hold
        RETURNING settled_at INTO settled;
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 200,
            convert_to(format(p_template, wallet_balance, json_time(settled)), 'UTF8'));
    END
    $$;
