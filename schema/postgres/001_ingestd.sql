-- ingestd's own objects, in the schema `ingestd` (docs/design.md, "Database contract").
-- `ingestd.migrations`, the record of applied files, is created by `ingestd schema apply`
-- itself before it reads which files are new.

CREATE SCHEMA IF NOT EXISTS ingestd;

-- Exactly-once ledger: the writer inserts each request key in the transaction that stores the
-- request's rows, and skips keys it finds. Kept for schema.ledger_retention_s, then pruned.
CREATE TABLE ingestd.ledger (
    requestKey bytea PRIMARY KEY,
    signal text,
    items integer,
    rejected integer,
    message text,
    committedAt timestamptz NOT NULL DEFAULT now()
);
-- Pruning deletes by age; without this index each run would scan the whole ledger.
CREATE INDEX ledger_committedat_idx ON ingestd.ledger (committedAt);

-- The policies `schema apply` set from the config: the maintenance job enforces what is here
-- (so every replica enforces the same thing, whatever its own file says), and
-- `ingestd.retention_policies` and `schema status` show it.
CREATE TABLE ingestd.policies (
    schemaName text NOT NULL,
    tableName text NOT NULL,
    timeColumn text NOT NULL,
    -- hypertable chunk width or native partition width; null when not partitioned by time
    chunkInterval interval,
    dropAfter interval NOT NULL,
    -- full tier only; null elsewhere (compression needs the TSL part of TimescaleDB)
    compressAfter interval,
    -- postgres tier: partitions are kept created this far ahead of now()
    partitionsAhead interval,
    -- 'timescaledb': a TimescaleDB policy job enforces it; 'ingestd': the maintenance job does
    enforcedBy text NOT NULL CHECK (enforcedBy IN ('timescaledb', 'ingestd')),
    updatedAt timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schemaName, tableName)
);

-- One row per maintenance run (kept 7 days): who ran it, what it did, whether it failed.
CREATE TABLE ingestd.maintenance_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    startedAt timestamptz NOT NULL DEFAULT now(),
    finishedAt timestamptz,
    holder text NOT NULL,
    trigger text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    scheduleIntervalS double precision,
    status text NOT NULL CHECK (status IN ('running', 'ok', 'error', 'abandoned')),
    summary jsonb NOT NULL DEFAULT '{}',
    error text
);
CREATE INDEX maintenance_runs_startedat_idx ON ingestd.maintenance_runs (startedAt);

-- Keeps updatedAt honest on the tables people edit (alerts, users); not used on ingest tables.
CREATE FUNCTION ingestd.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updatedAt := now();
    RETURN NEW;
END;
$$;
