-- The plate's open session at the lot, locked and read again (it may have closed meanwhile).
CREATE OR REPLACE FUNCTION lane_open_session(p_lot text, p_plate text) RETURNS SETOF sessions
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found uuid;
BEGIN
    SELECT s.session_id INTO found FROM sessions s
     WHERE s.lot_id = p_lot AND s.plate_key = p_plate AND s.status <> 'closed';
    IF found IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_lock(session_lock(found));
    RETURN QUERY SELECT * FROM sessions s WHERE s.session_id = found AND s.status <> 'closed';
END
$$;
