-- metrics and traces with PostgreSQL's native range partitioning (tier postgres: no
-- TimescaleDB). Same columns and indexes as the hypertables (010_metrics_traces.timescaledb.sql).
--
-- Partitions are created ahead of time (schema.partitions_ahead_hours, which must cover
-- ingest.max_future_skew_s) and dropped past retention by the maintenance job. A row with no
-- partition of its own (an old point backfilled, or a future one while maintenance was down
-- for days) lands in the DEFAULT partition instead of failing the writer's COPY with "no
-- partition of relation found for row"; the next maintenance run creates the partition for
-- it and moves it there, or deletes it if it is past retention.

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
) PARTITION BY RANGE (timestamp);
CREATE TABLE metrics_default PARTITION OF metrics DEFAULT;
CREATE INDEX metrics_timestamp_idx ON metrics (timestamp DESC);
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
) PARTITION BY RANGE (startTime);
CREATE TABLE traces_default PARTITION OF traces DEFAULT;
CREATE INDEX traces_starttime_idx ON traces (startTime DESC);
CREATE INDEX traces_applicationid_starttime_idx ON traces (applicationId, startTime DESC);
CREATE INDEX traces_traceid_idx ON traces (traceId);
