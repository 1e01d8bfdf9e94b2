-- The start of a hold's settlement (capture, void): the key claimed, then the hold locked and
-- judged. With `outcome` set, answer it (a replay, a key conflict, or why the hold cannot be
-- settled; nothing written); else `hold` is the pending hold, locked. `p_known` false: the hold
-- did not exist when the caller looked (payments_0006, was pending_hold).
CREATE OR REPLACE FUNCTION claim_hold(
    p_lock bigint, p_scope text, p_key text, p_fingerprint text, p_hold uuid,
    p_known boolean, p_check_expiry boolean, OUT hold holds, OUT outcome idempotent_outcome
) LANGUAGE plpgsql AS $$
    BEGIN
        outcome := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF outcome.outcome IS NOT NULL THEN
            RETURN;
        END IF;
        IF p_known THEN
            SELECT * INTO hold FROM holds h WHERE h.id = p_hold FOR UPDATE;
        END IF;
        IF hold.id IS NULL THEN
            outcome := refused(jsonb_build_object('code', 'hold_not_found'));
        ELSIF hold.status <> 'pending' THEN
            outcome := refused(jsonb_build_object('code', 'hold_not_pending',
                                                  'hold_status', hold.status));
        ELSIF p_check_expiry AND hold.expires_at <= now() THEN
            outcome := refused(jsonb_build_object('code', 'hold_expired'));
        END IF;
    END
    $$;
