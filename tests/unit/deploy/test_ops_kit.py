"""The operations kit cannot drift from the code: dashboard and alert rules name only real metrics.

deploy/grafana/ingestd.json (written by deploy/grafana/dashboard.py) and
deploy/prometheus/ingestd-rules.yaml may only use metrics ingestd exports
(ingestd/observe/metrics.py and the registry of a built daemon), with labels those metrics have;
every query parses (promtool checks them as recording rules) and the alert rules pass their
promtool unit tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import ingestd.observe.metrics
from ingestd import config
from ingestd.daemon import build
from tests.opskit import (
    ROOT,
    RULE_TESTS,
    RULES,
    dashboard_queries,
    dashboard_recording_rules,
    prometheus_tool,
    rule_queries,
    rule_test_series,
)

GENERATOR = ROOT / "deploy" / "grafana" / "dashboard.py"

_METRIC = re.compile(r"\bingestd_[a-z0-9_]+")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
# Labels Prometheus adds at scrape time, and the bucket bound of histograms.
TARGET_LABELS = {"job", "instance", "le"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
}


def exported() -> dict[str, set[str]]:
    """Every sample name ingestd exports -> the label names it carries."""
    build(config.parse("redis: {enabled: false}"))
    families: dict[str, tuple[str, set[str]]] = {
        metric._name: (metric._type, set(metric._labelnames))
        for metric in vars(ingestd.observe.metrics).values()
        if isinstance(metric, MetricWrapperBase)
    }
    for family in REGISTRY.collect():
        labels = {name for sample in family.samples for name in sample.labels}
        known = families.get(family.name, (family.type, set()))
        families[family.name] = (family.type, known[1] | labels - {"le", "quantile"})
    return {
        name + suffix: labels
        for name, (kind, labels) in families.items()
        for suffix in _SUFFIXES.get(kind, ("",))
    }


def problems(query: str, metrics: dict[str, set[str]]) -> list[str]:
    """Unknown metrics in *query*, and labels none of its metrics has."""
    names = set(_METRIC.findall(query))
    found = [f"unknown metric {n}" for n in sorted(names) if n not in metrics]
    allowed = TARGET_LABELS.union(*(metrics.get(n, set()) for n in names))
    used = {label.strip() for group in _BY.findall(query) for label in group.split(",")}
    used |= set(_MATCHER.findall(query))
    found += [
        f"label {label} on none of {sorted(names)}" for label in sorted(used - allowed - {""})
    ]
    return found


def test_dashboard_json_is_the_generators_output() -> None:
    """The committed JSON is what deploy/grafana/dashboard.py writes (edit the script, rerun it)."""
    out = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr


def test_dashboard_covers_what_the_operators_asked_for() -> None:
    """Panels exist for items by signal and reason, latency, batches, buffers, Redis, memory."""
    text = " ".join(dashboard_queries())
    for metric in [
        "ingestd_receiver_accepted_items_total",
        "ingestd_receiver_refused_items_total",
        "ingestd_receiver_rejected_items_total",
        "ingestd_ack_latency_seconds_bucket",
        "ingestd_batch_items_bucket",
        "ingestd_sink_write_seconds_bucket",
        "ingestd_batcher_buffered_bytes",
        "ingestd_sink_retries_total",
        "ingestd_redis_breaker_open",
        "ingestd_memory_shedding",
        "ingestd_maintenance_runs_total",
        "ingestd_application_accepted_items_total",
        "ingestd_timescaledb_jobs_failing",
    ]:
        assert metric in text, metric


def test_the_rules_cover_what_on_call_must_hear_about() -> None:
    """An alert exists for each condition issue 17 lists, TimescaleDB jobs failing included."""
    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"]: rule["expr"] for g in rules["groups"] for rule in g["rules"]}
    for alert, metric in [
        ("IngestdRefusingData", "ingestd_receiver_refused_requests_total"),
        ("IngestdBufferNearlyFull", "ingestd_batcher_buffered_bytes"),
        ("IngestdSinkRetrying", "ingestd_sink_retries_total"),
        ("IngestdMaintenanceFailing", "ingestd_maintenance_errors_total"),
        ("IngestdWorkerRestartLoop", "ingestd_worker_restarts_total"),
        ("IngestdTimescaleJobsFailing", "ingestd_timescaledb_jobs_failing"),
    ]:
        assert metric in alerts.get(alert, ""), alert
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t.get("alert_rule_test", [])}
    assert tested == set(alerts), "every alert has promtool test cases"


@pytest.mark.parametrize(
    ("source", "queries"),
    [
        ("dashboard", dashboard_queries),
        ("alert rules", rule_queries),
        ("rule tests", rule_test_series),
    ],
)
def test_every_metric_and_label_is_one_ingestd_exports(source: str, queries: Any) -> None:
    """Each metric named (and each label grouped or matched on) exists in ingestd's registry."""
    metrics = exported()
    found = {q: p for q in queries() if (p := problems(q, metrics))}
    assert found == {}, f"{source}: {json.dumps(found, indent=1)}"


def test_the_check_catches_a_renamed_metric_or_label() -> None:
    """A metric or label that ingestd does not export is reported."""
    metrics = exported()
    assert problems("rate(ingestd_sink_retries_total[5m])", metrics) == []
    assert problems("rate(ingestd_sink_retry_total[5m])", metrics) == [
        "unknown metric ingestd_sink_retry_total"
    ]
    assert problems("sum by (signal) (rate(ingestd_sink_retries_total[5m]))", metrics) == [
        "label signal on none of ['ingestd_sink_retries_total']"
    ]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs promtool with `args`, capturing its output; the caller checks the return code."""
    return subprocess.run(
        [prometheus_tool("promtool"), *args], capture_output=True, text=True, check=False
    )


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool accepts every panel query as a recording rule (Grafana variables filled in)."""
    rules = dashboard_recording_rules()
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in out.stdout


def test_alert_rules_check_and_pass_their_unit_tests() -> None:
    """`promtool check rules` and `promtool test rules` pass on deploy/prometheus/."""
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
