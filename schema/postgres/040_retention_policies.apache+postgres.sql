-- ingestd.retention_policies: what the Deep Eyes setup document expected from
-- `timescaledb_information.retention_policies`, a view no TimescaleDB release ever had (1.x
-- had drop_chunks_policies; 2.x keeps retention jobs in timescaledb_information.jobs). One
-- row per table with a retention: who enforces it, how often, and how its last run went.
-- On this tier ingestd's maintenance job enforces every one of them (drop_chunks on the
-- apache tier, dropping partitions on the postgres tier, deleting old rollup/ledger rows).
-- Same columns as on the full tier (040_retention_policies.full.sql).
CREATE VIEW ingestd.retention_policies AS
WITH last_run AS (
    SELECT startedAt, status FROM ingestd.maintenance_runs ORDER BY id DESC LIMIT 1
), schedule AS (
    SELECT scheduleIntervalS FROM ingestd.maintenance_runs
    WHERE trigger = 'schedule' ORDER BY id DESC LIMIT 1
)
SELECT p.schemaName AS hypertable_schema, p.tableName AS hypertable_name,
       p.timeColumn AS time_column, p.dropAfter AS drop_after,
       'ingestd'::text AS enforced_by, NULL::integer AS job_id,
       make_interval(secs => s.scheduleIntervalS) AS schedule_interval,
       r.startedAt AS last_run_started_at, r.status AS last_run_status,
       r.startedAt + make_interval(secs => s.scheduleIntervalS) AS next_start
FROM ingestd.policies AS p
LEFT JOIN last_run AS r ON true
LEFT JOIN schedule AS s ON true;
