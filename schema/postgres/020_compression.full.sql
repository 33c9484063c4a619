-- Native compression (full tier: needs timescaledb.license = 'timescale'). The policies that
-- compress chunks after schema.metrics/traces.compress_after_days (30 d / 7 d by default) are
-- added by the policy step of `schema apply`, from the config.
--
-- metrics: segmentby (applicationId, name) = one series group per segment. Dashboards and the
-- rollups read one application's metric over a time range, which then decompresses only that
-- segment's batches; (application, metric name) pairs number in the thousands, so a one-day
-- chunk still fills batches of up to 1000 points instead of fragmenting. Attributes would
-- fragment far more (one segment per attribute set) and are jsonb. orderby timestamp DESC
-- matches `ORDER BY timestamp DESC` (Deep Eyes query 1) and lets min/max metadata per batch
-- skip batches outside a time range.
ALTER TABLE metrics SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'applicationid, name',
    timescaledb.compress_orderby = 'timestamp DESC'
);

-- traces: segmentby applicationId, because Deep Eyes query 3 filters on it
-- (`WHERE applicationId = 'app-id' AND startTime > ... ORDER BY startTime DESC`); adding the
-- span name would split segments by route and shrink batches. orderby startTime DESC serves
-- the same query's order and time filter.
ALTER TABLE traces SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'applicationid',
    timescaledb.compress_orderby = 'starttime DESC'
);
