-- The advisory lock of one session (the single-bigint key space, as Idempotency-Keys').
CREATE OR REPLACE FUNCTION session_lock(p_session uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended('parking-session:' || p_session::text, 0)
$$;
