-- A VietQR payment request for a parking fee (payments_0002). Slot: %1$s created_at.
CREATE OR REPLACE FUNCTION parking_payment_request_once(
    p_lock bigint, p_scope text, p_key text, p_fingerprint text,
    p_request uuid, p_reference text, p_amount bigint, p_lot text, p_session text,
    p_qr text, p_template text
) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        result idempotent_outcome;
        created timestamptz;
    BEGIN
        result := idempotency_claim(p_lock, p_scope, p_key, p_fingerprint);
        IF result.outcome IS NOT NULL THEN
            RETURN result;
        END IF;
        INSERT INTO payment_requests (id, reference, purpose, amount, lot_id, parking_session_id,
                                      qr_payload)
        VALUES (p_request, p_reference, 'parking_fee', p_amount, p_lot, p_session, p_qr)
        RETURNING created_at INTO created;
        RETURN idempotency_store(p_scope, p_key, p_fingerprint, 201,
            convert_to(format(p_template, json_time(created)), 'UTF8'));
    END
    $$;
