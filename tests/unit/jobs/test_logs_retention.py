"""The logs retention stage: runs enforce_retention, and survives an Elasticsearch failure."""

from __future__ import annotations

from typing import Any

from ingestd import config
from ingestd.daemon import build
from ingestd.jobs.logs_retention import LogsRetention
from ingestd.observe.metrics import MAINTENANCE_ERRORS


class _Unreachable:
    """An Elasticsearch client whose every call fails like a refused connection."""

    def __getattr__(self, name: str) -> Any:
        raise ConnectionError("connection refused")


class _Sink:
    client = _Unreachable()


async def test_a_failing_run_is_counted_and_not_raised() -> None:
    """Elasticsearch down: the run logs, counts an error and leaves the loop alive."""
    cfg = config.parse("", environ={})
    stage = LogsRetention(_Sink(), cfg.sinks.elasticsearch, cfg.maintenance)  # type: ignore[arg-type]
    before = MAINTENANCE_ERRORS.labels(step="elasticsearch_retention")._value.get()
    await stage.run_once()
    after = MAINTENANCE_ERRORS.labels(step="elasticsearch_retention")._value.get()
    assert after == before + 1
    assert "connection refused" in str(stage.status()["error"])


def test_daemon_runs_logs_retention_with_the_elasticsearch_sink() -> None:
    """With Elasticsearch and maintenance enabled the stage exists; without maintenance not."""
    with_it = build(config.parse("redis: {enabled: false}", environ={}))
    assert "logs_retention" in with_it.stages
    without = build(config.parse("maintenance: {enabled: false}", environ={}))
    assert "logs_retention" not in without.stages
