-- The hold's settled state, or why it cannot be settled (nothing written then)
-- (payments_0002).
CREATE OR REPLACE FUNCTION pending_hold(
    p_hold uuid, p_check_expiry boolean, OUT hold holds, OUT refusal jsonb
) LANGUAGE plpgsql AS $$
    BEGIN
        SELECT * INTO hold FROM holds h WHERE h.id = p_hold FOR UPDATE;
        IF NOT FOUND THEN
            refusal := jsonb_build_object('code', 'hold_not_found');
        ELSIF hold.status <> 'pending' THEN
            refusal := jsonb_build_object('code', 'hold_not_pending', 'hold_status', hold.status);
        ELSIF p_check_expiry AND hold.expires_at <= now() THEN
            refusal := jsonb_build_object('code', 'hold_expired');
        END IF;
    END
    $$;
