"""Writes deploy/grafana/ingestd.json, the Grafana dashboard over ingestd's own metrics.

    python3 deploy/grafana/dashboard.py            rewrite the JSON next to this file
    python3 deploy/grafana/dashboard.py --check    exit 1 if the JSON differs from this source

The panels are declared here, one line each, so that a change reads as a diff of queries rather
than of generated JSON; tests/unit/deploy/test_ops_kit.py checks that the committed JSON is this
file's output, that every metric it names is one ingestd exports, and that every query parses.
Import the JSON in Grafana (Dashboards > New > Import) and pick the Prometheus data source.
"""

# ruff: noqa: E501  -- a query or a panel's description reads best on one line

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("ingestd.json")
SEL = '{job=~"$job", instance=~"$instance"}'
RATE = "$__rate_interval"
# Per-application panels show the busiest ids only: a fleet can register thousands.
TOP_APPLICATIONS = 10


def sel(extra: str = "") -> str:
    """The dashboard's label selector, with *extra* matchers (`outcome="ok"`) added."""
    return SEL if not extra else SEL[:-1] + ", " + extra + "}"


def rate(metric: str, by: str, extra: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{sel(extra)}[{RATE}]))"


def quantile(q: float, metric: str, by: str, extra: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{sel(extra)}[{RATE}])))"


# (title, unit, [(expr, legend)], description). A title alone starts a row.
Panel = tuple[str, str, list[tuple[str, str]], str]
PANELS: list[Panel | str] = [
    "Ingest",
    (
        "Accepted items / s",
        "short",
        [
            (
                rate("ingestd_receiver_accepted_items_total", "signal, transport"),
                "{{signal}} {{transport}}",
            )
        ],
        "Items acknowledged to clients (stored; buffered under ack: accepted).",
    ),
    (
        "Refused items / s",
        "short",
        [(rate("ingestd_receiver_refused_items_total", "signal, reason"), "{{signal}} {{reason}}")],
        "Items of decoded requests answered with a retryable or final error, by error class.",
    ),
    (
        "Refused requests / s",
        "reqps",
        [
            (
                rate("ingestd_receiver_refused_requests_total", "signal, reason"),
                "{{signal}} {{reason}}",
            )
        ],
        "Requests answered with an error, including those refused before decoding (memory, pressure).",
    ),
    (
        "Rejected items / s (partial success)",
        "short",
        [
            (
                rate("ingestd_receiver_rejected_items_total", "signal, reason"),
                "{{signal}} {{reason}}",
            )
        ],
        "Items refused for good inside accepted requests: bad records, sink rejections.",
    ),
    (
        "Requests by status",
        "reqps",
        [
            (
                rate("ingestd_receiver_requests_total", "transport, status"),
                "{{transport}} {{status}}",
            )
        ],
        "Export requests by the status sent: ok, partial, or the gRPC code / HTTP status.",
    ),
    (
        "Ack latency p50 / p99",
        "s",
        [
            (
                quantile(0.5, "ingestd_ack_latency_seconds", "signal", 'outcome="ok"'),
                "p50 {{signal}}",
            ),
            (
                quantile(0.99, "ingestd_ack_latency_seconds", "signal", 'outcome="ok"'),
                "p99 {{signal}}",
            ),
        ],
        "From a decoded request to its OK answer (under ack: committed, until stored).",
    ),
    (
        f"Accepted items / s, top {TOP_APPLICATIONS} applications",
        "short",
        [
            (
                f"topk({TOP_APPLICATIONS}, {rate('ingestd_application_accepted_items_total', 'application')})",
                "{{application}}",
            )
        ],
        "By application id (registered applications' keys; 'derived' for requests without one, 'other' past ingestd's cap of 100 ids per process).",
    ),
    (
        "Accepted items / s by application and signal",
        "short",
        [
            (
                f"topk({TOP_APPLICATIONS}, {rate('ingestd_application_accepted_items_total', 'application, signal')})",
                "{{application}} {{signal}}",
            )
        ],
        f"The {TOP_APPLICATIONS} busiest application/signal pairs.",
    ),
    (
        "Authentication",
        "ops",
        [
            (rate("ingestd_auth_failures_total", "reason"), "refused {{reason}}"),
            (rate("ingestd_application_key_checks_total", "source"), "key checked in {{source}}"),
        ],
        "Requests refused as unauthenticated by reason; application key lookups by where they were answered (failed: no answer, request refused).",
    ),
    "Batching and sinks",
    (
        "Buffer fill (bytes)",
        "percentunit",
        [
            (
                f"sum by (sink) (ingestd_batcher_buffered_bytes{SEL}) / sum by (sink) (ingestd_batcher_capacity_bytes{SEL} > 0)",
                "{{sink}}",
            )
        ],
        "Bytes held by each sink's batcher over its buffer.max_bytes; refusals start at 100 %.",
    ),
    (
        "Buffer fill (items)",
        "percentunit",
        [
            (
                f"sum by (sink) (ingestd_batcher_buffered_items{SEL}) / sum by (sink) (ingestd_batcher_capacity_items{SEL} > 0)",
                "{{sink}}",
            )
        ],
        "Items held by each sink's batcher over its buffer.max_items.",
    ),
    (
        "Batch size (items) p50 / p99",
        "short",
        [
            (quantile(0.5, "ingestd_batch_items", "sink"), "p50 {{sink}}"),
            (quantile(0.99, "ingestd_batch_items", "sink"), "p99 {{sink}}"),
        ],
        "Items per written batch.",
    ),
    (
        "Batch size (bytes) p50 / p99",
        "bytes",
        [
            (quantile(0.5, "ingestd_batch_bytes", "sink"), "p50 {{sink}}"),
            (quantile(0.99, "ingestd_batch_bytes", "sink"), "p99 {{sink}}"),
        ],
        "OTLP wire bytes per written batch.",
    ),
    (
        "Sink write time p50 / p99",
        "s",
        [
            (quantile(0.5, "ingestd_sink_write_seconds", "sink", 'outcome="ok"'), "p50 {{sink}}"),
            (quantile(0.99, "ingestd_sink_write_seconds", "sink", 'outcome="ok"'), "p99 {{sink}}"),
        ],
        "One successful write attempt of one batch.",
    ),
    (
        "Write attempts by outcome",
        "ops",
        [(rate("ingestd_sink_write_seconds_count", "sink, outcome"), "{{sink}} {{outcome}}")],
        "Batch write attempts: ok, unavailable (retried), rejected, error.",
    ),
    (
        "Retries / s",
        "ops",
        [(rate("ingestd_sink_retries_total", "sink"), "{{sink}}")],
        "Write attempts retried after a transient error.",
    ),
    (
        "Items refused at the buffer / dropped after it",
        "short",
        [
            (
                rate("ingestd_batcher_refused_items_total", "sink, reason"),
                "refused {{sink}} {{reason}}",
            ),
            (
                rate("ingestd_batcher_dropped_items_total", "sink, reason"),
                "dropped {{sink}} {{reason}}",
            ),
        ],
        "Refused: the client was told to retry. Dropped: given up after buffering (data lost under ack: accepted).",
    ),
    (
        "Flushes by trigger",
        "ops",
        [(rate("ingestd_batcher_flushes_total", "sink, reason"), "{{sink}} {{reason}}")],
        "Batches cut by size, bytes, age or drain.",
    ),
    (
        "Elasticsearch documents by outcome",
        "short",
        [(rate("ingestd_elasticsearch_docs_total", "outcome"), "{{outcome}}")],
        "stored, duplicate (409), retried (429/503), rejected.",
    ),
    (
        "Elasticsearch _bulk by outcome",
        "reqps",
        [(rate("ingestd_elasticsearch_bulk_requests_total", "outcome"), "{{outcome}}")],
        "_bulk requests by outcome.",
    ),
    "Redis and shared state",
    (
        "Redis calls by outcome",
        "ops",
        [(rate("ingestd_redis_calls_total", "op, outcome"), "{{op}} {{outcome}}")],
        "ok, timeout, error, breaker_open.",
    ),
    (
        "Redis call latency p99",
        "s",
        [(quantile(0.99, "ingestd_redis_call_seconds", "op"), "{{op}}")],
        "Redis calls that answered.",
    ),
    (
        "Redis breaker open",
        "short",
        [(f"max(ingestd_redis_breaker_open{SEL})", "open")],
        "1 while Redis is skipped: no cross-replica dedup, local limits only.",
    ),
    (
        "Dedup outcomes",
        "ops",
        [(rate("ingestd_dedup_requests_total", "outcome"), "{{outcome}}")],
        "new, done (a retried request answered from Redis), waited_done, taken_over, skipped, joined.",
    ),
    (
        "Pressure and rate limits",
        "reqps",
        [
            (
                rate("ingestd_pressure_refused_requests_total", "signal, reason"),
                "pressure {{signal}} {{reason}}",
            ),
            (
                rate("ingestd_ratelimit_requests_total", "scope, outcome", 'outcome="limited"'),
                "limited {{scope}}",
            ),
        ],
        "Requests refused at admission because a sink fails, or over a tenant limit.",
    ),
    "Memory and processes",
    (
        "Memory held vs limit",
        "bytes",
        [
            (f"sum(ingestd_memory_held_bytes{SEL})", "held"),
            (f"sum(ingestd_memory_held_limit_bytes{SEL})", "limit"),
        ],
        "Bytes held by the batchers and requests being decoded; memory.max_buffered_bytes.",
    ),
    (
        "RSS per process vs guard",
        "bytes",
        [
            (f"ingestd_process_resident_memory_bytes{SEL}", "{{instance}} {{pid}}"),
            (f"max(ingestd_memory_rss_limit_bytes{SEL})", "guard"),
        ],
        "Resident memory; the RSS guard refuses new requests above its limit.",
    ),
    (
        "Memory guard",
        "short",
        [
            (f"max by (reason) (ingestd_memory_shedding{SEL})", "shedding {{reason}}"),
            (rate("ingestd_memory_refused_requests_total", "reason"), "refused/s {{reason}}"),
        ],
        "1 while new requests are refused for memory; requests refused per second.",
    ),
    (
        "CPU",
        "percentunit",
        [
            (
                f"sum by (instance) (rate(ingestd_process_cpu_seconds_total{SEL}[{RATE}]))",
                "{{instance}}",
            )
        ],
        "CPU seconds per second of all of ingestd's processes.",
    ),
    (
        "Workers",
        "short",
        [
            (f"sum(ingestd_workers_running{SEL})", "running"),
            (f"sum(ingestd_workers_configured{SEL})", "configured"),
            (
                f"sum by (reason) (increase(ingestd_worker_restarts_total{SEL}[1h]))",
                "restarts/h {{reason}}",
            ),
        ],
        "Worker processes alive and configured; restarts after unexpected exits.",
    ),
    (
        "Components up",
        "short",
        [(f"min by (component) (ingestd_component_up{SEL})", "{{component}}")],
        "1 when a component is ok or degraded.",
    ),
    (
        "TCP connections by peer",
        "short",
        [(f"sum by (peer) (ingestd_process_tcp_connections{SEL})", "{{peer}}")],
        "Established connections: clients of grpc/http/admin, servers postgresql/elasticsearch/redis.",
    ),
    "Maintenance",
    (
        "Maintenance runs by outcome",
        "short",
        [(f"sum by (outcome) (increase(ingestd_maintenance_runs_total{SEL}[1h]))", "{{outcome}}")],
        "Runs per hour: ok, error, skipped (locked, recent, no_schema).",
    ),
    (
        "Maintenance errors by step",
        "short",
        [(f"sum by (step) (increase(ingestd_maintenance_errors_total{SEL}[1h]))", "{{step}}")],
        "Failed steps per hour.",
    ),
    (
        "Since the last successful run",
        "s",
        [(f"time() - max(ingestd_maintenance_last_success_timestamp_seconds{SEL} > 0)", "age")],
        "One replica runs maintenance at a time; the newest success of any.",
    ),
    (
        "Maintenance run time p90",
        "s",
        [(quantile(0.9, "ingestd_maintenance_run_seconds", "job"), "{{job}}")],
        "Duration of runs that acted.",
    ),
    (
        "Maintenance work",
        "short",
        [
            (
                f"sum by (table) (increase(ingestd_maintenance_dropped_chunks_total{SEL}[1h]))",
                "dropped {{table}}",
            ),
            (
                f"sum by (table) (increase(ingestd_maintenance_created_partitions_total{SEL}[1h]))",
                "partitions {{table}}",
            ),
            (
                f"sum(increase(ingestd_maintenance_ledger_pruned_rows_total{SEL}[1h]))",
                "ledger pruned",
            ),
            (f"sum(increase(ingestd_maintenance_es_rollovers_total{SEL}[1h]))", "ES rollovers"),
        ],
        "Per hour: chunks/partitions dropped past retention, partitions created, ledger rows pruned, data streams rolled over.",
    ),
    (
        "TimescaleDB policy jobs (full tier)",
        "short",
        [
            (f"max(ingestd_timescaledb_jobs_failing{SEL})", "failing or overdue"),
            (f"sum(increase(ingestd_timescaledb_jobs_run_total{SEL}[1h]))", "run by ingestd / h"),
        ],
        "Policy jobs whose last run failed or that are overdue, as of the last maintenance run; jobs ingestd ran itself (CALL run_job) while TimescaleDB's scheduler failed them.",
    ),
    (
        "Config reloads (SIGHUP)",
        "short",
        [(f"sum by (outcome) (increase(ingestd_config_reloads_total{SEL}[1h]))", "{{outcome}}")],
        "Reloads per hour: applied, unchanged, failed (the old settings stay; the log says why).",
    ),
]


def _panel(
    pid: int, title: str, unit: str, targets: list[tuple[str, str]], text: str, x: int, y: int
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": text,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"fillOpacity": 10}}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, x, y = 1, 0, 0
    for entry in PANELS:
        if isinstance(entry, str):
            y += 0 if x == 0 else 8
            x = 0
            panels.append(
                {
                    "id": pid,
                    "type": "row",
                    "title": entry,
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                    "panels": [],
                }
            )
            pid, y = pid + 1, y + 1
            continue
        title, unit, targets, text = entry
        panels.append(_panel(pid, title, unit, targets, text, x, y))
        pid, x = pid + 1, x + 8
        if x == 24:
            x, y = 0, y + 8
    return {
        "title": "ingestd",
        "uid": "ingestd-overview",
        "description": "ingestd's own metrics: ingest, batching and sinks, Redis, memory, maintenance (deploy/grafana/dashboard.py).",
        "tags": ["ingestd", "opentelemetry"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                    "current": {},
                    "hide": 0,
                },
                _variable("job", "label_values(ingestd_build_info, job)"),
                _variable("instance", 'label_values(ingestd_build_info{job=~"$job"}, instance)'),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        if OUT.read_text() != render():
            print(f"{OUT} is stale: run python3 {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
