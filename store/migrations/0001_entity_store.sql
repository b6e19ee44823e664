-- The entity store and its webhook outbox on PostgreSQL (store/src/pg_store.rs).
-- Identifiers compare byte by byte (COLLATE "C"): pages and the queue's ties follow the
-- same order as the embedded store's keys.

-- One row per entity: the record as JSON, with what queries select on beside it.
CREATE TABLE entities (
    id TEXT COLLATE "C" PRIMARY KEY,
    -- Not converted (a lead) or churned (a customer).
    open BOOLEAN NOT NULL,
    -- Its last event, else its creation: the rescoring sweep's filter.
    last_active_ms BIGINT NOT NULL,
    record JSONB NOT NULL
);

-- Events in time order, then order of arrival (seq: the entity's arrival count).
CREATE TABLE events (
    entity TEXT COLLATE "C" NOT NULL,
    ts_ms BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    client_id TEXT,
    event_type TEXT NOT NULL,
    channel TEXT,
    value DOUBLE PRECISION,
    PRIMARY KEY (entity, ts_ms, seq)
);
-- A client event id is stored once per entity (sending an event again is harmless).
CREATE UNIQUE INDEX events_client_id ON events (entity, client_id) WHERE client_id IS NOT NULL;
-- The retention finds old events without reading every entity.
CREATE INDEX events_ts ON events (ts_ms);

-- Each model's latest score of an entity; `queued` while the entity is open (the sales queue).
CREATE TABLE scores (
    entity TEXT COLLATE "C" NOT NULL,
    model TEXT COLLATE "C" NOT NULL,
    queued BOOLEAN NOT NULL,
    probability DOUBLE PRECISION NOT NULL,
    events_seen BIGINT NOT NULL,
    score JSONB NOT NULL,
    PRIMARY KEY (entity, model)
);
CREATE INDEX scores_queue ON scores (model, probability DESC, entity) WHERE queued;

-- The outbox: one row per delivery of a message to an endpoint, pending or dead.
CREATE TABLE deliveries (
    endpoint TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    entity TEXT COLLATE "C" NOT NULL,
    dead BOOLEAN NOT NULL DEFAULT false,
    delivery JSONB NOT NULL,
    PRIMARY KEY (endpoint, seq)
);
CREATE INDEX deliveries_entity ON deliveries (entity);

-- The outbox order: a message's sequence, drawn while its entity is locked.
CREATE SEQUENCE outbox_seq;

-- The store's constants (the outbox epoch, part of every message id).
CREATE TABLE store_meta (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Entity and event counts, kept as deltas in many slots (each writer adds to its own, so
-- writers never wait on one counter row); a count is the sum over the slots.
CREATE TABLE counters (
    slot INTEGER PRIMARY KEY,
    entities BIGINT NOT NULL,
    events BIGINT NOT NULL
);

-- Locks the entities `ids` for the transaction, in one order for every caller (no
-- deadlock between writers), whether or not they are stored yet.
CREATE FUNCTION lock_entities(ids TEXT[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    k INTEGER;
BEGIN
    FOR k IN SELECT DISTINCT hashtext(i) AS h FROM unnest(ids) AS i ORDER BY h LOOP
        -- 1280525134: 'LSEN', this store's namespace of advisory locks.
        PERFORM pg_advisory_xact_lock(1280525134, k);
    END LOOP;
END
$$;
