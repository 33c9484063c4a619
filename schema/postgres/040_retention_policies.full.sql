-- ingestd.retention_policies: what the Deep Eyes setup document expected from
-- `timescaledb_information.retention_policies`, a view no TimescaleDB release ever had (1.x
-- had drop_chunks_policies; 2.x keeps retention jobs in timescaledb_information.jobs). One
-- row per table with a retention: who enforces it, how often, and how its last run went.
-- On this tier TimescaleDB's retention jobs enforce it for the hypertables and continuous
-- aggregates; ingestd's maintenance job prunes ingestd.ledger.
CREATE VIEW ingestd.retention_policies AS
WITH last_run AS (
    SELECT startedAt, status FROM ingestd.maintenance_runs ORDER BY id DESC LIMIT 1
), schedule AS (
    SELECT scheduleIntervalS FROM ingestd.maintenance_runs
    WHERE trigger = 'schedule' ORDER BY id DESC LIMIT 1
), timescaledb_jobs AS (
    SELECT coalesce(c.view_schema, j.hypertable_schema)::text AS hypertable_schema,
           coalesce(c.view_name, j.hypertable_name)::text AS hypertable_name,
           (j.config ->> 'drop_after')::interval AS drop_after,
           j.job_id, j.schedule_interval,
           s.last_run_started_at, s.last_run_status, s.next_start
    FROM timescaledb_information.jobs AS j
    LEFT JOIN timescaledb_information.job_stats AS s ON s.job_id = j.job_id
    LEFT JOIN timescaledb_information.continuous_aggregates AS c
        ON c.materialization_hypertable_schema = j.hypertable_schema
       AND c.materialization_hypertable_name = j.hypertable_name
    WHERE j.proc_name = 'policy_retention'
)
SELECT t.hypertable_schema, t.hypertable_name, p.timeColumn AS time_column, t.drop_after,
       'timescaledb'::text AS enforced_by, t.job_id, t.schedule_interval,
       t.last_run_started_at, t.last_run_status, t.next_start
FROM timescaledb_jobs AS t
LEFT JOIN ingestd.policies AS p
    ON p.schemaName = t.hypertable_schema AND p.tableName = t.hypertable_name
UNION ALL
SELECT p.schemaName, p.tableName, p.timeColumn, p.dropAfter,
       'ingestd', NULL::integer, make_interval(secs => s.scheduleIntervalS),
       r.startedAt, r.status, r.startedAt + make_interval(secs => s.scheduleIntervalS)
FROM ingestd.policies AS p
LEFT JOIN last_run AS r ON true
LEFT JOIN schedule AS s ON true
WHERE p.enforcedBy = 'ingestd';
