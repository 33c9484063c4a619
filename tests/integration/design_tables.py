"""The design.md tables, created in a test database until `ingestd schema apply` lands.

TEMPORARY: `create_design_tables` is the one place that knows this DDL. When the schema
engineer's `ingestd schema apply` is merged, replace its body with a call to that command
(and delete the DDL below); every test that needs the tables goes through this function.
"""

from __future__ import annotations

import psycopg

# Exactly the tables of docs/design.md ("Database contract"), unquoted camelCase identifiers.
_DDL = """
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
SELECT create_hypertable('metrics', 'timestamp');

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
SELECT create_hypertable('traces', 'starttime');

CREATE TABLE resources (
    id bigint PRIMARY KEY,
    attributes jsonb,
    droppedAttributesCount integer,
    schemaUrl text,
    firstSeenAt timestamptz
);
CREATE TABLE scopes (
    id bigint PRIMARY KEY,
    name text,
    version text,
    attributes jsonb,
    droppedAttributesCount integer,
    schemaUrl text,
    firstSeenAt timestamptz
);
CREATE TABLE applications (
    id text PRIMARY KEY,
    name text,
    namespace text,
    environment text,
    createdAt timestamptz,
    lastSeenAt timestamptz
);
CREATE TABLE metric_descriptions (
    applicationId text,
    name text,
    type text,
    unit text,
    description text,
    updatedAt timestamptz,
    PRIMARY KEY (applicationId, name)
);

CREATE SCHEMA ingestd;
CREATE TABLE ingestd.ledger (
    requestKey bytea PRIMARY KEY,
    signal text,
    items integer,
    rejected integer,
    message text,
    committedAt timestamptz DEFAULT now()
);
"""


def create_design_tables(dsn: str, admin_dsn: str) -> None:
    """Create the design.md tables in the (fresh, empty) database *dsn* is connected to.

    The TimescaleDB extension needs a superuser, so it is created through *admin_dsn*
    pointed at the same database; the tables are created as the ingestd role, which owns them.
    """
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin = psycopg.conninfo.make_conninfo(admin_dsn, dbname=dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_DDL.encode())
