-- Runs once, when the postgres volume is still empty (the image's /docker-entrypoint-initdb.d),
-- as POSTGRES_USER connected to POSTGRES_DB, which the image has already created.
-- Schemas and tables are NOT made here: `citypass stack migrate` creates one schema per service
-- (payments, ticketing, parking) with Alembic, exactly as in the local `make run` mode.

-- Query statistics for operations; docker-compose.yml preloads the library.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- Timestamps are stored as timestamptz; sessions default to UTC whatever the host says.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), 'UTC');
END
$$;
