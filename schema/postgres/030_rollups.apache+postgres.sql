-- metrics_hourly and metrics_daily without continuous aggregates (tiers apache and postgres):
-- each is a view over a rollup table that the maintenance job keeps, plus the newest buckets
-- aggregated live, the way a real-time continuous aggregate works (030_rollups.full.sql):
--
--   buckets <  watermark: read from ingestd.metrics_<width>_rollup (materialized)
--   buckets >= watermark: aggregated from the raw rows at query time
--
-- Each refresh re-aggregates from min(watermark, now() - lateWindow) to the start of the
-- current bucket, upserts the result and moves the watermark there, so points arriving up to
-- lateWindow late are reflected; a refresh after downtime catches up from the watermark.
-- Buckets are aligned like time_bucket's (UTC, origin 2000-01-03), with date_bin, which
-- both tiers have.

CREATE TABLE ingestd.rollups (
    name text PRIMARY KEY,
    bucketWidth interval NOT NULL,
    lateWindow interval NOT NULL,
    refreshInterval interval NOT NULL,
    -- buckets before this are materialized; null until the first refresh
    watermark timestamptz,
    lastRefreshAt timestamptz,
    lastRefreshFrom timestamptz,
    lastRefreshRows bigint
);
-- lateWindow and refreshInterval are overwritten from the config by `schema apply`.
INSERT INTO ingestd.rollups (name, bucketWidth, lateWindow, refreshInterval) VALUES
    ('metrics_hourly', INTERVAL '1 hour', INTERVAL '3 hours', INTERVAL '30 minutes'),
    ('metrics_daily', INTERVAL '1 day', INTERVAL '3 hours', INTERVAL '30 minutes');

-- SECURITY DEFINER: a role that may read metrics and the views needs no rights on the
-- schema ingestd. (It is not inlined either way: a scalar subquery prevents that.)
CREATE FUNCTION ingestd.rollup_watermark(rollup text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT watermark FROM ingestd.rollups WHERE name = rollup), '-infinity')
$$;

CREATE TABLE ingestd.metrics_hourly_rollup (
    bucket timestamptz NOT NULL,
    applicationId text NOT NULL,
    name text NOT NULL,
    avgValue double precision,
    minValue double precision,
    maxValue double precision,
    sumValue double precision,
    countValue bigint NOT NULL,
    -- bucket first: the views read and retention deletes by bucket range
    PRIMARY KEY (bucket, applicationId, name)
);

CREATE TABLE ingestd.metrics_daily_rollup (LIKE ingestd.metrics_hourly_rollup INCLUDING ALL);

-- The one definition of an hourly bucket, used by the view (live part) and by the refresh.
-- A single-SELECT SQL function is inlined by the planner, so lo/hi prune chunks/partitions.
-- Its body is resolved when it runs, under the caller's search_path: hence public.metrics.
CREATE FUNCTION ingestd.aggregate_metrics_hourly(lo timestamptz, hi timestamptz)
RETURNS TABLE (
    bucket timestamptz, applicationId text, name text, avgValue double precision,
    minValue double precision, maxValue double precision, sumValue double precision,
    countValue bigint
)
LANGUAGE sql STABLE AS $$
    SELECT date_bin(INTERVAL '1 hour', m.timestamp, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
           m.applicationId, m.name,
           avg(m.value), min(m.value), max(m.value), sum(m.value), count(m.value)
    FROM public.metrics AS m
    WHERE m.timestamp >= lo AND m.timestamp < hi AND m.value IS NOT NULL
    GROUP BY 1, 2, 3
$$;

CREATE VIEW metrics_hourly AS
SELECT bucket, applicationId, name, avgValue, minValue, maxValue, sumValue, countValue
FROM ingestd.metrics_hourly_rollup
WHERE bucket < ingestd.rollup_watermark('metrics_hourly')
UNION ALL
SELECT bucket, applicationId, name, avgValue, minValue, maxValue, sumValue, countValue
FROM ingestd.aggregate_metrics_hourly(ingestd.rollup_watermark('metrics_hourly'), 'infinity');

-- Daily from hourly: min of mins, max of maxes, sums of sums and counts, avg = sum / count,
-- all exact. Reading the metrics_hourly view keeps it current for today's buckets.
CREATE FUNCTION ingestd.aggregate_metrics_daily(lo timestamptz, hi timestamptz)
RETURNS TABLE (
    bucket timestamptz, applicationId text, name text, avgValue double precision,
    minValue double precision, maxValue double precision, sumValue double precision,
    countValue bigint
)
LANGUAGE sql STABLE AS $$
    SELECT date_bin(INTERVAL '1 day', h.bucket, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
           h.applicationId, h.name,
           sum(h.sumValue) / sum(h.countValue)::double precision,
           min(h.minValue), max(h.maxValue), sum(h.sumValue), sum(h.countValue)::bigint
    FROM public.metrics_hourly AS h
    WHERE h.bucket >= lo AND h.bucket < hi
    GROUP BY 1, 2, 3
$$;

CREATE VIEW metrics_daily AS
SELECT bucket, applicationId, name, avgValue, minValue, maxValue, sumValue, countValue
FROM ingestd.metrics_daily_rollup
WHERE bucket < ingestd.rollup_watermark('metrics_daily')
UNION ALL
SELECT bucket, applicationId, name, avgValue, minValue, maxValue, sumValue, countValue
FROM ingestd.aggregate_metrics_daily(ingestd.rollup_watermark('metrics_daily'), 'infinity');
