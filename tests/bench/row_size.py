"""Bytes per row of `metrics` and `traces` for a typical point and span, per tier; prints a table.

    python -m tests.bench.row_size [--rows 10000] [--full-dsn postgresql://...:5433/postgres]

Creates throwaway databases on the dev stack's server (INGESTD_PG_ADMIN_DSN: tiers apache and
postgres) and, if given, on a full TimescaleDB (adds a row for compressed chunks), applies the
schema, COPYs --rows rows of each kind in binary the way the writer does, VACUUM ANALYZEs, and
reports heap, index and total bytes per row and the average row width (pg_column_size).

Typical point: a gauge with 3 attributes. Typical span: a server span with 10 attributes
(HTTP semantic conventions) and 1 event with 2 attributes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import yaml

from ingestd import config
from ingestd.schema import command

METRIC_COLUMNS = (
    "timestamp, applicationId, name, type, value, unit, attributes, timeUnixNano, flags,"
    " resourceId, scopeId"
)
METRIC_TYPES = [
    "timestamptz",
    "text",
    "text",
    "text",
    "float8",
    "text",
    "jsonb",
    "int8",
    "int4",
    "int8",
    "int8",
]
SPAN_COLUMNS = (
    "startTime, endTime, applicationId, traceId, spanId, parentSpanId, traceState, flags, name,"
    " kind, statusCode, statusMessage, startTimeUnixNano, durationNano, attributes, events,"
    " droppedAttributesCount, droppedEventsCount, droppedLinksCount, resourceId, scopeId"
)
SPAN_TYPES = [
    "timestamptz",
    "timestamptz",
    "text",
    "bytea",
    "bytea",
    "bytea",
    "text",
    "int4",
    "text",
    "int2",
    "int2",
    "text",
    "int8",
    "int8",
    "jsonb",
    "jsonb",
    "int4",
    "int4",
    "int4",
    "int8",
    "int8",
]
ROUTES = ["/api/orders/{id}", "/api/cart", "/api/users/{id}/profile", "/health", "/api/search"]


def metric_rows(n: int, now: float) -> list[tuple[Any, ...]]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        t = now - i * 0.01
        attributes = {
            "http.route": ROUTES[i % len(ROUTES)],
            "http.request.method": "GET",
            "http.response.status_code": 200,
        }
        out.append(
            (
                datetime.fromtimestamp(t, UTC),
                "9f2c4e6a8b0d1f3e",
                "http.server.active_requests",
                "gauge",
                rng.uniform(0, 100),
                "{request}",
                orjson.dumps(attributes).decode(),
                int(t * 1e9),
                0,
                1234567890123456789,
                -987654321098765432,
            )
        )
    return out


def span_rows(n: int, now: float) -> list[tuple[Any, ...]]:
    rng = random.Random(2)
    out = []
    for i in range(n):
        t = now - i * 0.01
        start = datetime.fromtimestamp(t, UTC)
        duration = rng.randint(200_000, 90_000_000)
        route = ROUTES[i % len(ROUTES)]
        attributes = {
            "http.request.method": "GET",
            "http.route": route,
            "url.path": route.replace("{id}", str(rng.randint(1, 99999))),
            "url.scheme": "https",
            "http.response.status_code": 200,
            "server.address": "shop.example.com",
            "server.port": 443,
            "network.protocol.version": "1.1",
            "client.address": f"10.0.{rng.randint(0, 255)}.{rng.randint(0, 255)}",
            "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        }
        events = [
            {
                "timeUnixNano": int(t * 1e9) + duration // 2,
                "name": "cache.miss",
                "attributes": {
                    "cache.key": f"order:{rng.randint(1, 99999)}",
                    "cache.tier": "redis",
                },
                "droppedAttributesCount": 0,
            }
        ]
        out.append(
            (
                start,
                start + timedelta(microseconds=duration // 1000),
                "9f2c4e6a8b0d1f3e",
                uuid.uuid4().bytes,
                uuid.uuid4().bytes[:8],
                uuid.uuid4().bytes[:8],
                "",
                1,
                f"GET {route}",
                2,
                0,
                "",
                int(t * 1e9),
                duration,
                orjson.dumps(attributes).decode(),
                orjson.dumps(events).decode(),
                0,
                0,
                0,
                1234567890123456789,
                -987654321098765432,
            )
        )
    return out


def copy(
    conn: psycopg.Connection[Any],
    table: str,
    columns: str,
    types: list[str],
    data: list[tuple[Any, ...]],
) -> float:
    began = time.perf_counter()
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as cp,
    ):
        cp.set_types(types)
        for row in data:
            cp.write_row(row)
    conn.commit()
    return time.perf_counter() - began


SIZES = """
SELECT sum(pg_relation_size(r) + coalesce(pg_relation_size(c.reltoastrelid), 0)),
       sum(pg_indexes_size(r)), sum(pg_total_relation_size(r))
FROM unnest(%s::regclass[]) AS r JOIN pg_class AS c ON c.oid = r
"""


def parts(conn: psycopg.Connection[Any], tier: str, table: str) -> list[str]:
    if tier == "postgres":
        query = "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass"
    else:
        query = "SELECT c::text FROM show_chunks(%s::regclass) AS c"
    return [r[0] for r in conn.execute(query, (table,)).fetchall()]


def measure(conn: psycopg.Connection[Any], tier: str, table: str, n: int) -> list[str]:
    names = parts(conn, tier, table)
    heap, index, total = conn.execute(SIZES, (names,)).fetchone()
    (width,) = conn.execute(f"SELECT avg(pg_column_size(t.*)) FROM {table} AS t").fetchone()
    return [
        tier,
        table,
        str(n),
        f"{heap / n:.0f}",
        f"{index / n:.0f}",
        f"{total / n:.0f}",
        f"{width:.0f}",
    ]


def compressed(conn: psycopg.Connection[Any], table: str, n: int) -> list[str]:
    for chunk in parts(conn, "full", table):
        conn.execute("SELECT compress_chunk(%s::regclass)", (chunk,))
    conn.commit()
    (after,) = conn.execute(
        "SELECT sum(after_compression_total_bytes) FROM chunk_compression_stats(%s::regclass)",
        (table,),
    ).fetchone()
    return ["full (compressed)", table, str(n), "-", "-", f"{after / n:.0f}", "-"]


async def run_tier(server_dsn: str, tier: str, n: int) -> list[list[str]]:
    name = f"rowsize_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    try:
        doc = {
            "sinks": {"timescale": {"dsn": dsn}, "elasticsearch": {"enabled": False}},
            "schema": {"tier": "postgres" if tier == "postgres" else "auto"},
        }
        await command.apply(config.parse(yaml.safe_dump(doc), environ={}), lambda _: None)
        now = time.time()
        out = []
        with psycopg.connect(dsn) as conn:
            points, spans = metric_rows(n, now), span_rows(n, now)
            took_m = copy(conn, "metrics", METRIC_COLUMNS, METRIC_TYPES, points)
            took_s = copy(conn, "traces", SPAN_COLUMNS, SPAN_TYPES, spans)
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE metrics")
            conn.execute("VACUUM ANALYZE traces")
            real = (
                conn.execute("SHOW timescaledb.license").fetchone() if tier != "postgres" else None
            )
            label = tier if real is None else ("full" if real[0] == "timescale" else "apache")
            out.append([*measure(conn, label, "metrics", n), f"{n / took_m:,.0f}"])
            out.append([*measure(conn, label, "traces", n), f"{n / took_s:,.0f}"])
            if label == "full":
                out.append([*compressed(conn, "metrics", n), "-"])
                out.append([*compressed(conn, "traces", n), "-"])
        return out
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--admin-dsn", default=os.environ.get("INGESTD_PG_ADMIN_DSN"))
    parser.add_argument("--full-dsn", default=os.environ.get("INGESTD_PG_FULL_DSN"))
    args = parser.parse_args()
    table = []
    for tier in ("apache", "postgres"):
        table += asyncio.run(run_tier(args.admin_dsn, tier, args.rows))
    if args.full_dsn:
        table += asyncio.run(run_tier(args.full_dsn, "full", args.rows))
    headers = [
        "tier",
        "table",
        "rows",
        "heap B/row",
        "index B/row",
        "total B/row",
        "avg row B",
        "COPY rows/s",
    ]
    widths = [max(len(str(r[i])) for r in [headers, *table]) for i in range(len(headers))]
    for row in [headers, ["-" * w for w in widths], *table]:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
