-- Stores the first answer of a key, in the transaction of its effect, and returns it.
CREATE OR REPLACE FUNCTION idempotency_store(
    p_scope text, p_key text, p_fingerprint text, p_status integer, p_body bytea
) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, media_type, body)
        VALUES (p_scope, p_key, p_fingerprint, p_status, 'application/json', p_body);
        RETURN ROW('created', p_status, 'application/json', p_body, NULL)::idempotent_outcome;
    END
    $$;
