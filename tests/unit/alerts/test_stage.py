"""The alerts stage in the daemon: wiring, reload of the rules, lifecycle without a database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from ingestd import config
from ingestd.alerts.stage import AlertsJob
from ingestd.daemon import build
from ingestd.pipeline import deadline_in
from ingestd.reload import ConfigReloader

RULE = {"name": "HighCpu", "severity": "HIGH", "metric": {"name": "cpu", "aggregate": "avg",
                                                          "threshold": 0.9}}  # fmt: skip


def write(path: Path, rules: list[dict[str, Any]]) -> None:
    doc = {
        "redis": {"enabled": False},
        "sinks": {"elasticsearch": {"enabled": False}},
        "alerts": {"enabled": True, "rules": rules},
    }
    path.write_text(yaml.safe_dump(doc))


def test_enabled_alerts_are_one_stage_after_maintenance(tmp_path: Path) -> None:
    """alerts.enabled adds the stage beside maintenance; off by default."""
    path = tmp_path / "ingestd.yaml"
    write(path, [RULE])
    names = [s.name for s in build(config.load(path), path).pipeline.stages]
    assert names[names.index("maintenance") + 1] == "alerts"
    assert "alerts" not in build(config.parse("redis: {enabled: false}")).stages


def test_sighup_reload_replaces_the_rules_and_a_bad_file_keeps_them(tmp_path: Path) -> None:
    """A reload hands the new alerts section to the stage; one that fails changes nothing."""
    path = tmp_path / "ingestd.yaml"
    write(path, [RULE])
    daemon = build(config.load(path), path)
    job, reloader = daemon.stages["alerts"], daemon.stages["reload"]
    assert isinstance(job, AlertsJob)
    assert isinstance(reloader, ConfigReloader)
    write(path, [RULE, {**RULE, "name": "Other"}])
    assert reloader.reload("test")
    assert [r.name for r in job.config.rules] == ["HighCpu", "Other"]
    write(path, [{**RULE, "metric": {"name": "cpu", "aggregate": "p99", "threshold": 1}}])
    assert not reloader.reload("test")
    assert [r.name for r in job.config.rules] == ["HighCpu", "Other"]


async def test_lifecycle_without_a_database() -> None:
    """stop() before start() and twice is fine; a pass that cannot connect is counted and the
    loop goes on; stop() returns promptly."""
    section = config.parse("alerts: {enabled: true, tick_s: 0.05}").alerts
    job = AlertsJob("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1", section, None)
    await job.stop(deadline_in(1))
    async with asyncio.TaskGroup() as tasks:
        await job.start(tasks)
        await asyncio.sleep(0.3)
        assert job.last is None  # every pass failed to connect; the loop is still alive
        assert job._task is not None
        assert not job._task.done()
        await job.stop(deadline_in(1))
        await job.stop(deadline_in(1))
    assert job.status() == {"last_pass": None, "rules": 0}
