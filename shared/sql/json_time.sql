-- A timestamp as pydantic writes it in JSON, quoted: 2026-01-02T03:04:05.123456Z.
CREATE OR REPLACE FUNCTION json_time(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
        SELECT CASE WHEN t IS NULL THEN 'null' ELSE
            '"' || to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
            || CASE WHEN to_char(t, 'US') = '000000' THEN '' ELSE to_char(t, '.US') END
            || 'Z"'
        END
    $$;
