-- Replicas sharing the store (store/src/pg_store.rs): each renews its lease on life while
-- it runs; a replica whose lease ran out is gone, and its pending deliveries are adopted by
-- the others.
CREATE TABLE replicas (
    id TEXT COLLATE "C" PRIMARY KEY,
    alive_until_ms BIGINT NOT NULL
);

-- The replica whose delivery worker holds a pending delivery (NULL: none).
ALTER TABLE deliveries ADD COLUMN owner TEXT COLLATE "C";

-- The database's clock in milliseconds: leases are judged by one clock, not the replicas'.
CREATE FUNCTION now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE AS $$
    SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8
$$;
