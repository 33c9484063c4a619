"""Helpers for the alert tests: configs, rows in metrics / traces, one evaluation, the alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import psycopg
import yaml

from ingestd.alerts import store
from ingestd.alerts.config import AlertsConfig
from ingestd.config import parse
from ingestd.schema.db import connect
from tests.integration.schema_support import insert_span_rows


def alerts_config(rules: list[dict[str, Any]], **extra: Any) -> AlertsConfig:
    """An `alerts` section through the real config parser (so validation runs)."""
    doc = {"alerts": {"enabled": True, "rules": rules, **extra}}
    return parse(yaml.safe_dump(doc), environ={}).alerts


def insert_metrics(dsn: str, points: list[dict[str, Any]]) -> None:
    """Metric points; each dict has timestamp, app, name, and optionally value, attributes,
    type, temporality, monotonic, bounds, counts."""
    rows = [
        (
            p["timestamp"],
            p["app"],
            p["name"],
            p.get("type", "gauge"),
            p.get("value"),
            orjson.dumps(p.get("attributes", {})).decode(),
            p.get("temporality"),
            p.get("monotonic"),
            p.get("bounds"),
            p.get("counts"),
        )
        for p in points
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO metrics (timestamp, applicationId, name, type, value, unit, attributes,"
            " timeUnixNano, temporality, isMonotonic, flags, explicitBounds, bucketCounts,"
            " resourceId, scopeId)"
            " VALUES (%s, %s, %s, %s, %s, '1', %s, 0, %s, %s, 0, %s, %s, 1, 1)",
            rows,
        )


def insert_spans(dsn: str, spans: list[tuple[datetime, str, str, int, int, int]]) -> None:
    """Spans (startTime, applicationId, name, kind, statusCode, durationNano)."""
    insert_span_rows(
        dsn, [(t, t, app, name, kind, code, dur, {}) for t, app, name, kind, code, dur in spans]
    )


async def evaluate(
    dsn: str, config: AlertsConfig, now: datetime, es: Any = None
) -> list[store.Evaluation]:
    """Every rule of *config* once at *now* (forced: the schedule is not checked)."""
    conn = await connect(dsn, purpose="alerts-test")
    try:
        return [
            await store.evaluate_rule(conn, es, config, rule, now=now, force=True)
            for rule in config.rules
        ]
    finally:
        await conn.close()


def alerts(dsn: str) -> list[dict[str, Any]]:
    """Every row of the alerts table, oldest first, as dicts."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT applicationId, name, message, severity::text, status, rule, labels,"
            " fingerprint, resolvedAt FROM alerts ORDER BY createdAt, id"
        )
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []
