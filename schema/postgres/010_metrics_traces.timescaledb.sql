-- metrics and traces as TimescaleDB hypertables (tiers full and apache). Columns are fixed by
-- docs/design.md ("Database contract"): the writer COPYs exactly these. The chunk interval
-- given here is replaced from the config (set_chunk_time_interval) right after, by the
-- policy step of `schema apply`, before any chunk exists.

CREATE TABLE metrics (
    timestamp timestamptz NOT NULL,
    applicationId text NOT NULL,
    name text NOT NULL,
    type text NOT NULL,
    value double precision,
    intValue bigint,
    unit text NOT NULL,
    attributes jsonb NOT NULL,
    timeUnixNano bigint NOT NULL,
    startTimeUnixNano bigint,
    temporality smallint,
    isMonotonic boolean,
    flags integer NOT NULL,
    count bigint,
    sum double precision,
    min double precision,
    max double precision,
    explicitBounds double precision[],
    bucketCounts bigint[],
    scale integer,
    zeroCount bigint,
    zeroThreshold double precision,
    positiveOffset integer,
    positiveBucketCounts bigint[],
    negativeOffset integer,
    negativeBucketCounts bigint[],
    quantiles double precision[],
    quantileValues double precision[],
    exemplars jsonb,
    resourceId bigint NOT NULL,
    scopeId bigint NOT NULL
);
-- create_hypertable looks the column up by its exact (folded, lower-case) name.
-- It also creates metrics_timestamp_idx on (timestamp DESC): `ORDER BY timestamp DESC`.
SELECT create_hypertable('metrics', by_range('timestamp', INTERVAL '1 day'));
-- One series over time (dashboards, the rollups' grouping). No unique index: duplicates are
-- prevented by ingestd.ledger, and every index costs the writer on each row.
CREATE INDEX metrics_applicationid_name_timestamp_idx
    ON metrics (applicationId, name, timestamp DESC);

CREATE TABLE traces (
    startTime timestamptz NOT NULL,
    endTime timestamptz NOT NULL,
    applicationId text NOT NULL,
    traceId bytea NOT NULL,
    spanId bytea NOT NULL,
    parentSpanId bytea,
    traceState text NOT NULL,
    flags integer NOT NULL,
    name text NOT NULL,
    kind smallint NOT NULL,
    statusCode smallint NOT NULL,
    statusMessage text NOT NULL,
    startTimeUnixNano bigint NOT NULL,
    durationNano bigint NOT NULL,
    attributes jsonb NOT NULL,
    events jsonb,
    links jsonb,
    droppedAttributesCount integer NOT NULL,
    droppedEventsCount integer NOT NULL,
    droppedLinksCount integer NOT NULL,
    resourceId bigint NOT NULL,
    scopeId bigint NOT NULL
);
-- 'starttime', not 'startTime': the column name was folded to lower case (timescale.md §7).
SELECT create_hypertable('traces', by_range('starttime', INTERVAL '6 hours'));
-- `WHERE applicationId = ... AND startTime > ... ORDER BY startTime DESC` (Deep Eyes query 3).
CREATE INDEX traces_applicationid_starttime_idx ON traces (applicationId, startTime DESC);
-- Fetching one trace by id (the trace view); there is no time bound in that lookup.
CREATE INDEX traces_traceid_idx ON traces (traceId);
