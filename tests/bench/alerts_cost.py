"""Cost of alert rule evaluations at scale: time and database work per rule per evaluation.

    python -m tests.bench.alerts_cost [--apps 100] [--hours 24] [--budget-s 900] [--keep]

Creates a throwaway database on the dev stack (INGESTD_PG_ADMIN_DSN, tier apache), applies the
schema, and loads --apps applications x 20 series (5 metric names x 4 `host` attribute sets:
gauges cpu, mem, queue; a cumulative counter requests; a delta histogram latency with 9
buckets), one point per 10 s, for --hours hours ending now (oldest hour first; the load stops
early when --budget-s is spent, and says so), plus one server span per application per second
for the last hour. It then refreshes the rollups (the maintenance job's refresh), and for each
rule below runs 5 forced evaluations (the first one writes the firing alerts) and one EXPLAIN
(ANALYZE, BUFFERS) of its query. Prints a Markdown table and the plans.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import yaml

from ingestd import config as config_module
from ingestd.alerts import queries, store
from ingestd.alerts.config import AlertsConfig
from ingestd.alerts.stage import evaluator_connection
from ingestd.schema import command, maintenance

RULES: list[dict[str, Any]] = [
    {
        "name": "cpu_avg_5m_per_series",
        "metric": {"name": "cpu", "aggregate": "avg", "window_s": 300, "threshold": 0.9},
    },
    {
        "name": "requests_rate_5m_per_series",
        "metric": {"name": "requests", "aggregate": "rate", "window_s": 300, "threshold": 5},
    },
    {
        "name": "latency_p99_5m_per_series",
        "metric": {
            "name": "latency",
            "aggregate": "quantile",
            "quantile": 0.99,
            "window_s": 300,
            "threshold": 900,
        },
    },
    {
        "name": "cpu_avg_1h_filtered_per_app",
        "metric": {
            "name": "cpu",
            "aggregate": "avg",
            "window_s": 3600,
            "where": {"host": "h1"},
            "by": "application",
            "threshold": 0.6,
        },
    },
    {
        "name": "cpu_max_24h_per_app_rollup",
        "metric": {
            "name": "cpu",
            "aggregate": "max",
            "window_s": 86400,
            "by": "application",
            "threshold": 0.99999,
        },
    },
    {
        # One second more than a whole number of hours: not served by the rollup (raw rows).
        "name": "cpu_max_24h_per_app_raw",
        "metric": {
            "name": "cpu",
            "aggregate": "max",
            "window_s": 86401,
            "by": "application",
            "threshold": 0.99999,
        },
    },
    {
        "name": "errors_ratio_5m_per_app",
        "traces": {"measure": "error_ratio", "window_s": 300, "threshold": 0.05},
    },
    {
        "name": "latency_p95_5m_per_app",
        "traces": {
            "measure": "latency_quantile",
            "quantile": 0.95,
            "window_s": 300,
            "threshold": 950,
        },
    },
]

_LOAD_HOUR = """
INSERT INTO metrics (timestamp, applicationId, name, type, value, unit, attributes, timeUnixNano,
    temporality, isMonotonic, flags, explicitBounds, bucketCounts, resourceId, scopeId)
SELECT ts, 'app' || a, n.name, n.type,
    CASE n.type
        WHEN 'gauge' THEN random()
        WHEN 'sum' THEN extract(epoch FROM ts - %(origin)s) * (a %% 7 + 1) + s * 1000
    END,
    '1', jsonb_build_object('host', 'h' || s), 0,
    CASE n.type WHEN 'sum' THEN 2 WHEN 'histogram' THEN 1 END,
    CASE WHEN n.type = 'sum' THEN true END, 0,
    CASE WHEN n.type = 'histogram'
        THEN ARRAY[5, 10, 25, 50, 100, 250, 500, 1000]::float8[] END,
    CASE WHEN n.type = 'histogram' THEN ARRAY[(random() * 3)::bigint, 2, 5, 10, 20, 10, 5,
        (random() * 3)::bigint, (random() * 2)::bigint] END,
    1, 1
FROM generate_series(%(lo)s, %(hi)s, interval '10 s') AS ts,
     generate_series(0, %(apps)s - 1) AS a,
     generate_series(0, 3) AS s,
     (VALUES ('cpu', 'gauge'), ('mem', 'gauge'), ('queue', 'gauge'), ('requests', 'sum'),
             ('latency', 'histogram')) AS n(name, type)
"""

_LOAD_SPANS = """
INSERT INTO traces (startTime, endTime, applicationId, traceId, spanId, traceState, flags, name,
    kind, statusCode, statusMessage, startTimeUnixNano, durationNano, attributes,
    droppedAttributesCount, droppedEventsCount, droppedLinksCount, resourceId, scopeId)
SELECT ts, ts, 'app' || a, uuid_send(gen_random_uuid()),
    substring(uuid_send(gen_random_uuid()) FROM 1 FOR 8), '', 1, 'GET /x', 2,
    CASE WHEN random() < 0.03 THEN 2 ELSE 1 END, '', 0, (random() * 1e9)::bigint, '{}',
    0, 0, 0, 1, 1
FROM generate_series(%(lo)s, %(hi)s, interval '1 s') AS ts, generate_series(0, %(apps)s - 1) AS a
"""


def make_database(admin_dsn: str, dsn: str) -> str:
    name = f"bench_alerts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER ingestd')
    with psycopg.connect(
        psycopg.conninfo.make_conninfo(admin_dsn, dbname=name), autocommit=True
    ) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


def load(dsn: str, apps: int, hours: int, budget_s: float, now: datetime) -> tuple[int, float]:
    """Hours of points, oldest first, until *budget_s*; returns (hours loaded, seconds)."""
    began = time.monotonic()
    origin = now - timedelta(hours=hours)
    loaded = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for h in range(hours, 0, -1):
            if time.monotonic() - began > budget_s:
                break
            lo = now - timedelta(hours=h)
            hi = lo + timedelta(hours=1) - timedelta(seconds=10)
            params = {"lo": lo, "hi": hi, "apps": apps, "origin": origin}
            conn.execute(_LOAD_HOUR, params)
            loaded += 1
            print(f"loaded hour -{h}: {time.monotonic() - began:.0f} s", flush=True)
        conn.execute(_LOAD_SPANS, {"lo": now - timedelta(hours=1), "hi": now, "apps": apps})
        conn.execute("VACUUM ANALYZE metrics")
        conn.execute("VACUUM ANALYZE traces")
    return loaded, time.monotonic() - began


def alerts_section(rules: list[dict[str, Any]]) -> AlertsConfig:
    named = [{"severity": "LOW", **r} for r in rules]
    doc = {"alerts": {"enabled": True, "rules": named}}
    return config_module.parse(yaml.safe_dump(doc), environ={}).alerts


async def measure(dsn: str, now: datetime) -> list[dict[str, Any]]:
    cfg = alerts_section(RULES)
    conn = await evaluator_connection(dsn, cfg)
    out = []
    try:
        # A fresh start (also with --reuse): the first evaluation writes the firing alerts.
        for table in ("ingestd.alert_states", "ingestd.alert_outbox", "ingestd.alert_rules"):
            await conn.execute(f"DELETE FROM {table}")
        await conn.execute("DELETE FROM alerts WHERE rule IS NOT NULL")
        for rule in cfg.rules:
            times = []
            fired = series = 0
            for i in range(5):
                began = time.monotonic()
                done = await store.evaluate_rule(conn, None, cfg, rule, now=now, force=True)
                times.append((time.monotonic() - began) * 1000)
                if i == 0:
                    fired, series = done.fired, done.series
            if rule.metric is not None:
                hourly = await queries.hourly_source(conn)
                query, params = queries.metric_plan(rule, rule.metric, now, hourly)
            else:
                assert rule.traces is not None
                query, params = queries.trace_plan(rule, rule.traces, now)
            cur = await conn.execute(b"EXPLAIN (ANALYZE, BUFFERS) " + query.as_bytes(conn), params)
            plan = "\n".join(row[0] for row in await cur.fetchall())
            out.append(
                {
                    "rule": rule.name,
                    "rollup": rule.metric is not None and queries.uses_rollup(rule.metric),
                    "series": series,
                    "fired": fired,
                    "first_ms": times[0],
                    "median_ms": statistics.median(times[1:]),
                    "plan": plan,
                }
            )
            print(f"{rule.name}: {times}", flush=True)
    finally:
        await conn.close()
    return out


def buffers(plan: str) -> str:
    for line in plan.splitlines():
        if "Buffers:" in line:
            return line.strip().removeprefix("Buffers: ")
    return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--budget-s", type=float, default=900.0)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument(
        "--reuse", metavar="DSN", help="measure on a database loaded by an earlier --keep run"
    )
    args = parser.parse_args()
    admin = os.environ["INGESTD_PG_ADMIN_DSN"]
    if args.reuse:
        with psycopg.connect(args.reuse) as conn:
            row = conn.execute("SELECT max(timestamp) + interval '10 s' FROM metrics").fetchone()
        assert row is not None
        results = asyncio.run(measure(args.reuse, row[0]))
        report(results)
        return
    dsn = make_database(admin, os.environ["INGESTD_PG_DSN"])
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    print(f"database: {dbname} (--reuse takes its DSN)", flush=True)
    cfg = config_module.parse(
        yaml.safe_dump({"sinks": {"timescale": {"dsn": dsn}, "elasticsearch": {"enabled": False}}}),
        environ={},
    )
    try:
        asyncio.run(command.apply(cfg, lambda _: None))
        now = datetime.now(UTC).replace(microsecond=0)
        hours, load_s = load(dsn, args.apps, args.hours, args.budget_s, now)
        began = time.monotonic()
        asyncio.run(maintenance.maintain_once(dsn, cfg.maintenance, trigger="manual"))
        refresh_s = time.monotonic() - began
        with psycopg.connect(dsn) as conn:
            points = conn.execute("SELECT count(*) FROM metrics").fetchone()
            size = conn.execute("SELECT pg_size_pretty(hypertable_size('metrics'))").fetchone()
        print(
            f"\n{args.apps} applications x 20 series, {hours} of {args.hours} hour(s) loaded"
            f" in {load_s:.0f} s ({points and points[0]} points, metrics {size and size[0]}),"
            f" rollups refreshed in {refresh_s:.0f} s\n"
        )
        results = asyncio.run(measure(dsn, now))
        report(results)
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def report(results: list[dict[str, Any]]) -> None:
    print(
        "| rule | rollup | series | fired | first evaluation ms | later evaluations ms"
        " (median of 4) | query buffers (EXPLAIN ANALYZE) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['rule']} | {'yes' if r['rollup'] else 'no'} | {r['series']} | {r['fired']}"
            f" | {r['first_ms']:.0f} | {r['median_ms']:.0f} | {buffers(r['plan'])} |"
        )
    for r in results:
        print(f"\n#### {r['rule']}\n```\n{r['plan']}\n```")


if __name__ == "__main__":
    main()
