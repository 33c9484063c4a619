"""Helpers for the schema tests: configs per tier, apply/maintain, fixture rows, chunk ranges."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml

from ingestd import config
from ingestd.schema import command, maintenance, partitions
from tests.harness import deep_merge
from tests.integration.conftest import TierDatabase


def _schema_doc(db: TierDatabase, schema: dict[str, Any] | None) -> dict[str, Any]:
    """TimescaleDB of *db*'s tier only, with *schema* settings."""
    return {
        "sinks": {"timescale": {"dsn": db.dsn}, "elasticsearch": {"enabled": False}},
        "schema": {"tier": db.config_tier, **(schema or {})},
    }


def make_config(db: TierDatabase, schema: dict[str, Any] | None = None) -> config.Config:
    return config.parse(yaml.safe_dump(_schema_doc(db, schema)), environ={})


def write_config(db: TierDatabase, path: Path, schema: dict[str, Any] | None = None) -> Path:
    """The same config as a file for `ingestd schema ...`, logging JSON lines."""
    doc = deep_merge(_schema_doc(db, schema), {"telemetry": {"log_format": "json"}})
    path.write_text(yaml.safe_dump(doc))
    return path


async def apply(cfg: config.Config) -> list[str]:
    lines: list[str] = []
    await command.apply(cfg, lines.append)
    return lines


async def maintain(cfg: config.Config) -> maintenance.MaintenanceReport:
    return await maintenance.maintain_once(
        cfg.sinks.timescale.dsn, cfg.maintenance, trigger="manual"
    )


def rows(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone TO 'UTC'")
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def db_now(dsn: str) -> datetime:
    (row,) = rows(dsn, "SELECT now()")
    value: datetime = row[0]
    return value


def insert_points(dsn: str, points: list[tuple[datetime, str, str, float | None]]) -> None:
    """Gauge points (timestamp, applicationId, name, value) with the writer's NOT NULL columns."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO metrics (timestamp, applicationId, name, type, value, unit, attributes,"
            " timeUnixNano, flags, resourceId, scopeId)"
            " VALUES (%s, %s, %s, 'gauge', %s, '1', '{}', 0, 0, 1, 1)",
            points,
        )


def insert_spans(dsn: str, spans: list[tuple[datetime, str, str]]) -> None:
    """Spans (startTime, applicationId, name), 1 ms long."""
    insert_span_rows(
        dsn,
        [
            (t, t + timedelta(milliseconds=1), app, name, 2, 0, 1_000_000, {"n": name})
            for t, app, name in spans
        ],
    )


def insert_span_rows(
    dsn: str, spans: list[tuple[datetime, datetime, str, str, int, int, int, dict[str, Any]]]
) -> None:
    """Spans (startTime, endTime, applicationId, name, kind, statusCode, durationNano,
    attributes) with random ids."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO traces (startTime, endTime, applicationId, traceId, spanId, traceState,"
            " flags, name, kind, statusCode, statusMessage, startTimeUnixNano, durationNano,"
            " attributes, droppedAttributesCount, droppedEventsCount, droppedLinksCount,"
            " resourceId, scopeId)"
            " VALUES (%s, %s, %s, uuid_send(gen_random_uuid()),"
            " substring(uuid_send(gen_random_uuid()) FROM 1 FOR 8),"
            " '', 1, %s, %s, %s, '', 0, %s, %s, 0, 0, 0, 1, 1)",
            [(*span[:7], orjson.dumps(span[7]).decode()) for span in spans],
        )


def time_partitions(db: TierDatabase, table: str) -> list[tuple[datetime, datetime]]:
    """Chunk ranges (TimescaleDB tiers) or partition bounds (postgres tier) of *table*."""
    if db.tier == "postgres":
        found = rows(
            db.dsn,
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i"
            " JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            (table,),
        )
        ranges = [partitions.parse_bound(bound) for (bound,) in found]
        return sorted((r.lo, r.hi) for r in ranges if r is not None)
    return sorted(
        (lo, hi)
        for lo, hi in rows(
            db.dsn,
            "SELECT range_start, range_end FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'public' AND hypertable_name = %s",
            (table,),
        )
    )


DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
