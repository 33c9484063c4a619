"""Which rules the rollup serves, and the queries' shapes (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from ingestd.alerts.config import RuleConfig
from ingestd.alerts.queries import HourlySource, logs_query, metric_plan, uses_rollup
from ingestd.config import parse

NOW = datetime(2026, 12, 4, 21, 59, 40, tzinfo=UTC)


def rule(**condition: Any) -> RuleConfig:
    doc = {"alerts": {"rules": [{"name": "r", "severity": "LOW", "metric": condition}]}}
    return parse(yaml.safe_dump(doc), environ={}).alerts.rules[0]


def test_the_rollup_serves_only_unfiltered_per_application_whole_hours() -> None:
    """by application, no where, a simple aggregate, >= 2 whole hours; nothing else."""
    base = {"name": "cpu", "aggregate": "avg", "by": "application", "threshold": 1}
    served = [
        rule(**{**base, **change}).metric
        for change in (
            {"window_s": 7200},
            {"window_s": 86400, "aggregate": "count"},
        )
    ]
    refused = [
        rule(**{**base, **change}).metric
        for change in (
            {"window_s": 3600},
            {"window_s": 7201},
            {"window_s": 7200, "where": {"host": "a"}},
            {"window_s": 7200, "by": "series"},
        )
    ]
    assert all(m is not None and uses_rollup(m) for m in served)
    assert not any(m is not None and uses_rollup(m) for m in refused)


def test_rollup_hours_stop_at_the_watermark_and_raw_rows_cover_the_rest() -> None:
    """[lo_b, mid) from the rollup table, mid = min(whole hours' end, watermark), >= lo_b."""
    r = rule(name="cpu", aggregate="max", by="application", window_s=7200, threshold=1)
    assert r.metric is not None
    for watermark, mid in (
        (None, datetime(2026, 12, 4, 20, tzinfo=UTC)),  # never refreshed: all raw
        (datetime(2026, 12, 4, 18, tzinfo=UTC), datetime(2026, 12, 4, 20, tzinfo=UTC)),
        (datetime(2026, 12, 4, 21, tzinfo=UTC), datetime(2026, 12, 4, 21, tzinfo=UTC)),
        (datetime(2026, 12, 4, 23, tzinfo=UTC), datetime(2026, 12, 4, 21, tzinfo=UTC)),
    ):
        query, params = metric_plan(r, r.metric, NOW, HourlySource(True, watermark))
        assert params["lo_b"] == datetime(2026, 12, 4, 20, tzinfo=UTC)
        assert params["mid"] == mid
        assert params["lo"] == NOW - timedelta(hours=2)
        assert "ingestd.metrics_hourly_rollup" in query.as_string(None)
    query, params = metric_plan(r, r.metric, NOW, HourlySource(table=False))
    assert params["mid"] == datetime(2026, 12, 4, 21, tzinfo=UTC)
    assert "FROM metrics_hourly " in query.as_string(None)


def test_logs_query_filters_time_severity_application_and_text() -> None:
    """One size-0 search: time range, severity >= N, the application, every word matched."""
    r = parse(
        yaml.safe_dump(
            {
                "alerts": {
                    "rules": [
                        {
                            "name": "r",
                            "severity": "LOW",
                            "application": "app",
                            "logs": {"min_severity": 13, "match": "disk full", "threshold": 1},
                        }
                    ]
                }
            }
        ),
        environ={},
    ).alerts.rules[0]
    assert r.logs is not None
    body = logs_query(r, r.logs, NOW)
    assert body["size"] == 0
    filters = body["query"]["bool"]["filter"]
    assert {"range": {"severity_number": {"gte": 13}}} in filters
    assert {"term": {"application_id": "app"}} in filters
    assert body["query"]["bool"]["must"] == [
        {"match": {"body.text": {"query": "disk full", "operator": "and"}}}
    ]
    assert body["aggs"]["apps"]["terms"]["field"] == "application_id"
