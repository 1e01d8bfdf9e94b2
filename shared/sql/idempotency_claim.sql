-- The guard of a keyed write (shared.idempotency): NULL outcome when the key is free (and now
-- locked until the transaction ends); else in_flight, reused or the stored answer to replay.
CREATE OR REPLACE FUNCTION idempotency_claim(
    p_lock bigint, p_scope text, p_key text, p_fingerprint text
) RETURNS idempotent_outcome LANGUAGE plpgsql AS $$
    DECLARE
        stored record;
        result idempotent_outcome;
    BEGIN
        IF NOT pg_try_advisory_xact_lock(p_lock) THEN
            result.outcome := 'in_flight';
            RETURN result;
        END IF;
        SELECT k.fingerprint, k.status_code, k.media_type, k.body INTO stored
          FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
        IF FOUND THEN
            IF stored.fingerprint <> p_fingerprint THEN
                result.outcome := 'reused';
            ELSE
                result := ROW('replay', stored.status_code, stored.media_type, stored.body,
                              NULL)::idempotent_outcome;
            END IF;
        END IF;
        RETURN result;
    END
    $$;
