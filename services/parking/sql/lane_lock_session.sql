-- A session, read once its lock is ours (waits for whoever holds it).
CREATE OR REPLACE FUNCTION lane_lock_session(p_session uuid) RETURNS SETOF sessions
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_lock(session_lock(p_session));
    RETURN QUERY SELECT * FROM sessions s WHERE s.session_id = p_session;
END
$$;
