-- metrics_hourly and metrics_daily as continuous aggregates (full tier). Their refresh and
-- retention policies come from the config (schema.rollups) and are added by `schema apply`.
--
-- Real-time aggregation is ON (materialized_only = false; TimescaleDB's default is off since
-- 2.13): buckets newer than the last refresh are aggregated from the raw rows at query time,
-- so `metrics_hourly WHERE bucket > NOW() - INTERVAL '7 days'` includes the current hour. The
-- cost is aggregating at most one refresh interval of raw points per query. The rollup
-- tables of the other tiers behave the same way (030_rollups.apache+postgres.sql).
--
-- Only gauge and sum points carry `value`; distributions (histograms, summaries) have
-- value null and are left out rather than appearing as rows with count 0.

CREATE MATERIALIZED VIEW metrics_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', timestamp) AS bucket,
       applicationId,
       name,
       avg(value) AS avgValue,
       min(value) AS minValue,
       max(value) AS maxValue,
       sum(value) AS sumValue,
       count(value) AS countValue
FROM metrics
WHERE value IS NOT NULL
GROUP BY bucket, applicationId, name
WITH NO DATA;

-- Daily from hourly (a hierarchical continuous aggregate): min of mins, max of maxes, sum of
-- sums and counts are exact, and avg = sum / count is too, while reading 24x fewer rows.
CREATE MATERIALIZED VIEW metrics_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket,
       applicationId,
       name,
       sum(sumValue) / sum(countValue)::double precision AS avgValue,
       min(minValue) AS minValue,
       max(maxValue) AS maxValue,
       sum(sumValue) AS sumValue,
       sum(countValue)::bigint AS countValue
FROM metrics_hourly
GROUP BY time_bucket(INTERVAL '1 day', bucket), applicationId, name
WITH NO DATA;
