-- An Idempotency-Key claimed in one row (parking_0004): the key's session-level advisory lock,
-- which outlives the autocommit statement and is let go a moment after the answer commits, then
-- the stored answer, returned even when the lock is not ours (a retry gets its replay, not 409).
CREATE OR REPLACE FUNCTION lane_key(
    p_lock bigint, p_scope text, p_key text,
    OUT claimed boolean, OUT fingerprint text, OUT status_code integer,
    OUT media_type text, OUT body bytea
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    claimed := pg_try_advisory_lock(p_lock);
    SELECT k.fingerprint, k.status_code, k.media_type, k.body
      INTO fingerprint, status_code, media_type, body
      FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
END
$$;
