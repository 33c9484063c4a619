"""One rule's samples at one instant: SQL on metrics / traces (or the hourly rollup), or an
Elasticsearch count on the logs data streams.

Every reader returns the samples it found; a series absent from the answer has no data. A
failed read raises (psycopg.Error, elasticsearch's errors): the evaluation then changes
nothing. Windows are (now - window_s, now], `now` being the evaluation's time (the database
clock when the rule's row was locked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch
from psycopg import sql

from ingestd.alerts.config import LogsCondition, MetricCondition, RuleConfig, TracesCondition
from ingestd.alerts.rules import (
    DELTA,
    Sample,
    bucket_increase,
    delta_rate,
    extrapolated_rate,
    histogram_quantile,
)
from ingestd.schema.db import Connection

# OTLP Span.SpanKind and Status.StatusCode as stored in traces.kind / traces.statusCode.
SPAN_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
STATUS_ERROR = 2
HOUR = timedelta(hours=1)
LOGS_INDEX = "logs-*-*"
# Applications in one logs answer (the terms aggregation's size).
MAX_LOG_APPLICATIONS = 10_000

_SIMPLE = {"avg": "avg", "min": "min", "max": "max", "sum": "sum", "count": "count"}


def uses_rollup(metric: MetricCondition) -> bool:
    """metrics_hourly holds (application, name) aggregates only: it serves rules that filter
    no attribute, aggregate per application with avg/min/max/sum/count, over whole hours."""
    return (
        metric.by == "application"
        and not metric.where
        and metric.aggregate in _SIMPLE
        and metric.window_s >= 2 * HOUR.total_seconds()
        and metric.window_s % HOUR.total_seconds() == 0
    )


async def read_samples(
    conn: Connection, es: AsyncElasticsearch | None, rule: RuleConfig, now: datetime
) -> list[Sample]:
    """The rule's samples at *now*; raises when the data could not be read."""
    if rule.metric is not None:
        return await metric_samples(conn, rule, rule.metric, now)
    if rule.traces is not None:
        return await trace_samples(conn, rule, rule.traces, now)
    assert rule.logs is not None
    if es is None:
        raise LookupError("a logs rule needs sinks.elasticsearch enabled")
    return await log_samples(es, rule, rule.logs, now)


def _scope(rule: RuleConfig, column: str) -> tuple[sql.Composable, sql.Composable, dict[str, Any]]:
    """(application expression, extra WHERE, params) for the rule's application scope."""
    params: dict[str, Any] = {}
    where: sql.Composable = sql.SQL("")
    if rule.application is not None:
        where = sql.SQL(" AND {} = %(app)s").format(sql.Identifier(column))
        params["app"] = rule.application
    app = sql.Identifier(column) if rule.per_application else sql.SQL("NULL::text")
    return app, where, params


@dataclass(frozen=True)
class HourlySource:
    """Where whole hours come from: ingestd's rollup table up to its watermark (tiers apache
    and postgres: the `metrics_hourly` view would re-aggregate every raw row past the
    watermark for its live part), or the continuous aggregate `metrics_hourly` (tier full)."""

    table: bool
    watermark: datetime | None = None


async def hourly_source(conn: Connection) -> HourlySource:
    cur = await conn.execute("SELECT to_regclass('ingestd.metrics_hourly_rollup') IS NOT NULL")
    row = await cur.fetchone()
    if not (row and row[0]):
        return HourlySource(table=False)
    cur = await conn.execute(
        "SELECT nullif(ingestd.rollup_watermark('metrics_hourly'), '-infinity')"
    )
    row = await cur.fetchone()
    return HourlySource(table=True, watermark=row[0] if row else None)


def metric_plan(
    rule: RuleConfig,
    metric: MetricCondition,
    now: datetime,
    hourly: HourlySource = HourlySource(table=False),
) -> tuple[sql.Composed, dict[str, Any]]:
    """The SQL and parameters of a metric rule (also for EXPLAIN in the cost measurement)."""
    app, app_where, params = _scope(rule, "applicationid")
    params |= {"name": metric.name, "now": now, "lo": now - timedelta(seconds=metric.window_s)}
    where = sql.SQL("name = %(name)s AND timestamp > %(lo)s AND timestamp <= %(now)s") + app_where
    if metric.where:
        where += sql.SQL(" AND attributes @> %(attrs)s::jsonb")
        params["attrs"] = orjson.dumps(metric.where).decode()
    series = sql.SQL("attributes") if metric.by == "series" else sql.SQL("'{}'::jsonb")
    if metric.aggregate == "rate":
        query = sql.SQL(
            "SELECT {app}, attributes, max(temporality), bool_or(coalesce(isMonotonic, true)),"
            " array_agg(extract(epoch FROM timestamp)::float8 ORDER BY timestamp),"
            " array_agg(value ORDER BY timestamp)"
            " FROM metrics WHERE {where} AND value IS NOT NULL GROUP BY 1, 2"
        ).format(app=app, where=where)
        return query, params
    if metric.aggregate == "quantile":
        query = sql.SQL(
            "SELECT {app}, attributes, explicitBounds, temporality, max(timestamp),"
            " array_agg(bucketCounts ORDER BY timestamp)"
            " FROM metrics WHERE {where} AND type = 'histogram' AND bucketCounts IS NOT NULL"
            " GROUP BY 1, 2, 3, 4"
        ).format(app=app, where=where)
        return query, params
    if uses_rollup(metric):
        return _rollup_plan(app, app_where, params, metric, now, hourly)
    query = sql.SQL(
        "SELECT {app}, {series}, {agg}(value) FROM metrics WHERE {where}"
        " AND value IS NOT NULL GROUP BY 1, 2"
    ).format(app=app, series=series, agg=sql.SQL(_SIMPLE[metric.aggregate]), where=where)
    return query, params


def _rollup_plan(
    app: sql.Composable,
    app_where: sql.Composable,
    params: dict[str, Any],
    metric: MetricCondition,
    now: datetime,
    hourly: HourlySource,
) -> tuple[sql.Composed, dict[str, Any]]:
    # Whole hours [lo_b, mid) from the rollup; (lo, lo_b) and [mid, now] from raw rows, mid
    # being the end of the whole hours, or the rollup table's watermark if that is earlier.
    lo_b, hi_b = _ceil_hour(params["lo"]), _floor_hour(now)
    mid = hi_b
    if hourly.table:
        mid = max(lo_b, min(hi_b, hourly.watermark or lo_b))
    params |= {"lo_b": lo_b, "mid": mid}
    source = sql.SQL("ingestd.metrics_hourly_rollup" if hourly.table else "metrics_hourly")
    combine = {
        "avg": "sum(s) / nullif(sum(c), 0)",
        "min": "min(mn)",
        "max": "max(mx)",
        "sum": "sum(s)",
        "count": "sum(c)::float8",
    }[metric.aggregate]
    query = sql.SQL(
        "WITH parts AS ("
        " SELECT applicationId, sumValue AS s, countValue AS c, minValue AS mn, maxValue AS mx"
        " FROM {source} WHERE name = %(name)s AND bucket >= %(lo_b)s AND bucket < %(mid)s"
        "{app_where}"
        " UNION ALL"
        " SELECT applicationId, sum(value), count(value), min(value), max(value) FROM metrics"
        " WHERE name = %(name)s AND value IS NOT NULL{app_where} AND ("
        " (timestamp > %(lo)s AND timestamp < %(lo_b)s)"
        " OR (timestamp >= %(mid)s AND timestamp <= %(now)s)) GROUP BY 1)"
        " SELECT {app}, '{{}}'::jsonb, {combine} FROM parts GROUP BY 1 HAVING sum(c) > 0"
    ).format(source=source, app_where=app_where, app=app, combine=sql.SQL(combine))
    return query, params


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime:
    floor = _floor_hour(t)
    return floor if floor == t else floor + HOUR


async def metric_samples(
    conn: Connection, rule: RuleConfig, metric: MetricCondition, now: datetime
) -> list[Sample]:
    hourly = await hourly_source(conn) if uses_rollup(metric) else HourlySource(table=False)
    query, params = metric_plan(rule, metric, now, hourly)
    cur = await conn.execute(query, params)
    rows = await cur.fetchall()
    if metric.aggregate == "rate":
        start, end = (now - timedelta(seconds=metric.window_s)).timestamp(), now.timestamp()
        out = []
        for app, attrs, temporality, monotonic, times, values in rows:
            if temporality == DELTA:
                value = delta_rate(values, metric.window_s)
            else:
                points = list(zip(times, values, strict=True))
                value = extrapolated_rate(points, start, end, counter=bool(monotonic))
            out.append(Sample(app, attrs, value))
        return out
    if metric.aggregate == "quantile":
        assert metric.quantile is not None
        return _histogram_samples(rows, metric.quantile)
    return [Sample(app, attrs, None if v is None else float(v)) for app, attrs, v in rows]


def _histogram_samples(rows: Sequence[tuple[Any, ...]], q: float) -> list[Sample]:
    # Per series, the points sharing the bounds of its newest point (a changed bucket layout
    # cannot be merged bucket by bucket with the old one).
    newest: dict[tuple[str | None, bytes], tuple[Any, ...]] = {}
    for row in rows:
        key = (row[0], orjson.dumps(row[1], option=orjson.OPT_SORT_KEYS))
        if key not in newest or row[4] > newest[key][4]:
            newest[key] = row
    out = []
    for app, attrs, bounds, temporality, _, counts in newest.values():
        if temporality == DELTA:
            total = [sum(column) for column in zip(*counts, strict=True)]
        else:
            total = bucket_increase(counts[0], counts[-1]) if len(counts) > 1 else counts[-1]
        out.append(Sample(app, attrs, histogram_quantile(q, bounds or [], total)))
    return out


def trace_plan(
    rule: RuleConfig, traces: TracesCondition, now: datetime
) -> tuple[sql.Composed, dict[str, Any]]:
    app, app_where, params = _scope(rule, "applicationid")
    params |= {"now": now, "lo": now - timedelta(seconds=traces.window_s)}
    where = sql.SQL("startTime > %(lo)s AND startTime <= %(now)s") + app_where
    if traces.span_name is not None:
        where += sql.SQL(" AND name = %(span)s")
        params["span"] = traces.span_name
    if traces.span_kind is not None:
        where += sql.SQL(" AND kind = %(kind)s")
        params["kind"] = SPAN_KINDS[traces.span_kind]
    if traces.measure == "error_ratio":
        measure = sql.SQL("count(*) FILTER (WHERE statusCode = {})::float8 / count(*)").format(
            sql.Literal(STATUS_ERROR)
        )
    else:
        measure = sql.SQL("percentile_cont({}) WITHIN GROUP (ORDER BY durationNano) / 1e6").format(
            sql.Literal(traces.quantile)
        )
    query = sql.SQL("SELECT {app}, {measure} FROM traces WHERE {where} GROUP BY 1").format(
        app=app, measure=measure, where=where
    )
    return query, params


async def trace_samples(
    conn: Connection, rule: RuleConfig, traces: TracesCondition, now: datetime
) -> list[Sample]:
    query, params = trace_plan(rule, traces, now)
    cur = await conn.execute(query, params)
    series: dict[str, Any] = {}
    if traces.span_name is not None:
        series["span.name"] = traces.span_name
    if traces.span_kind is not None:
        series["span.kind"] = traces.span_kind
    return [Sample(app, series, float(v)) for app, v in await cur.fetchall() if v is not None]


def logs_query(rule: RuleConfig, logs: LogsCondition, now: datetime) -> dict[str, Any]:
    """The Elasticsearch search body of a logs rule (size 0, counts only)."""
    lo = now - timedelta(seconds=logs.window_s)
    filters: list[dict[str, Any]] = [
        {"range": {"@timestamp": {"gt": lo.isoformat(), "lte": now.isoformat()}}},
        {"range": {"severity_number": {"gte": logs.min_severity}}},
    ]
    if rule.application is not None:
        filters.append({"term": {"application_id": rule.application}})
    query: dict[str, Any] = {"bool": {"filter": filters}}
    if logs.match:
        query["bool"]["must"] = [{"match": {"body.text": {"query": logs.match, "operator": "and"}}}]
    body: dict[str, Any] = {"size": 0, "query": query, "track_total_hits": True}
    if rule.per_application:
        body["aggs"] = {
            "apps": {"terms": {"field": "application_id", "size": MAX_LOG_APPLICATIONS}}
        }
    return body


async def log_samples(
    es: AsyncElasticsearch, rule: RuleConfig, logs: LogsCondition, now: datetime
) -> list[Sample]:
    body = logs_query(rule, logs, now)
    answer = await es.search(
        index=LOGS_INDEX, ignore_unavailable=True, allow_no_indices=True, **body
    )
    if answer.get("_shards", {}).get("failed"):
        raise RuntimeError(f"logs count: {answer['_shards']['failed']} shard(s) failed")
    if not rule.per_application:
        total = answer["hits"]["total"]["value"]
        return [Sample(None, {}, float(total))] if total else []
    buckets = answer["aggregations"]["apps"]["buckets"]
    return [Sample(b["key"], {}, float(b["doc_count"])) for b in buckets]
