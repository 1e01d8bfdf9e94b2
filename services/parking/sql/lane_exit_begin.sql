-- An exit's first statement (parking_0004): the key as lane_key claims it, then (when it is ours
-- and unanswered) the plate's open session at the lot, locked and read again (it may have closed
-- meanwhile).
CREATE OR REPLACE FUNCTION lane_exit_begin(
    p_lock bigint, p_scope text, p_key text, p_lot text, p_plate text,
    OUT claimed boolean, OUT fingerprint text, OUT status_code integer,
    OUT media_type text, OUT body bytea, OUT session sessions
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found uuid;
BEGIN
    claimed := pg_try_advisory_lock(p_lock);
    SELECT k.fingerprint, k.status_code, k.media_type, k.body
      INTO fingerprint, status_code, media_type, body
      FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
    IF NOT claimed OR body IS NOT NULL OR p_plate IS NULL THEN
        RETURN;
    END IF;
    SELECT s.session_id INTO found FROM sessions s
     WHERE s.lot_id = p_lot AND s.plate_key = p_plate AND s.status <> 'closed';
    IF found IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_lock(session_lock(found));
    SELECT * INTO session FROM sessions s
     WHERE s.session_id = found AND s.status <> 'closed';
END
$$;
