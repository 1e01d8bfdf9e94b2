-- An idempotent_outcome saying why nothing was written (payments_0002).
CREATE OR REPLACE FUNCTION refused(p_refusal jsonb) RETURNS idempotent_outcome
LANGUAGE sql IMMUTABLE AS $$
        SELECT ROW(p_refusal ->> 'code', NULL, NULL, NULL, p_refusal)::idempotent_outcome
    $$;
