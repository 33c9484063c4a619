"""The benchmark harness works end to end (`python -m tests.bench --quick --no-peers`).

This is the CI smoke test of `make bench`: it checks that every section ran and produced
numbers, never how fast anything was (speed is reported by the benchmark, not asserted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingestd.convert import native
from tests.bench.sections import PEER_SECTIONS, SECTIONS, SIGNALS
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _numbers(node: Any) -> list[float]:
    if isinstance(node, bool):
        return []
    if isinstance(node, int | float):
        return [float(node)]
    if isinstance(node, dict):
        return [n for value in node.values() for n in _numbers(value)]
    if isinstance(node, list):
        return [n for value in node for n in _numbers(value)]
    return []


@pytest.fixture(scope="module")
def quick_report(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    env = {
        **os.environ,
        "INGESTD_PG_DSN": stack.pg_dsn,
        "INGESTD_PG_ADMIN_DSN": stack.pg_admin_dsn,
        "INGESTD_ES_URL": stack.es_url,
        "INGESTD_REDIS_URL": stack.redis_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--no-peers", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "## Targets" in done.stdout
    (path,) = out.glob("results-*.json")
    assert path.with_suffix(".md").exists()
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def test_every_section_is_present(quick_report: dict[str, Any]) -> None:
    """Each section is in the JSON: measured, or skipped with its reason."""
    for section in SECTIONS:
        assert section in quick_report, section
    for section in PEER_SECTIONS:
        assert quick_report[section] == {"skipped": "--no-peers"}


def test_measured_sections_hold_numbers(quick_report: dict[str, Any]) -> None:
    """Every section that ran reports numeric values (none is an empty shell)."""
    for section in SECTIONS:
        value = quick_report[section]
        if section in PEER_SECTIONS:
            continue
        assert _numbers(value), f"{section} has no numbers: {value}"


def test_each_signal_is_counted_in_its_sink(quick_report: dict[str, Any]) -> None:
    """Per signal: stored items/s from the sink, its baseline, CPU per million, batch sizes,
    both acks' latency, and the parse memory of both codecs."""
    for signal in SIGNALS:
        run = quick_report["throughput"][signal]
        assert run["stored_per_s"] > 0
        assert run["exact"]["stored_items"] == run["exact"]["acked_items"]
        assert run["cpu_s_per_million"] > 0
        assert run["batch"]["batches"] > 0
        baseline = quick_report["baselines"][signal]
        assert (baseline.get("rows_per_s") or baseline.get("docs_per_s") or 0) > 0
        assert quick_report["receive"][f"{signal}_max"]["acked_per_s"] > 0
        latency = quick_report["latency"][signal]["committed"]["50%"]
        assert latency["requests"] > 0
        assert latency["p99_ms"] >= latency["p50_ms"] > 0
        accepted = quick_report["latency"][signal]["accepted"]["50%"]
        assert accepted["p99_ms"] >= accepted["p50_ms"] > 0
        for codec in ("native", "python"):
            case = quick_report["parse_memory"][codec][signal]
            if codec == "native" and not native.available() and os.environ.get("CI") != "true":
                assert "error" in case  # no Rust toolchain here: the case says why
                continue
            assert case["peak_growth_bytes"] >= case["payload_bytes"] > 0, (codec, case)
            # The native codec reads the body itself (no upb message); the reference parses.
            assert case["message_is_body"] is (codec == "native"), (codec, case)
            if codec == "python":
                assert case["message_bytes"] > 0, case
    for table in ("traces", "metrics"):
        assert quick_report["duplicates"][table]["no_duplicates"]


def test_database_side_is_measured_in_both_runs(quick_report: dict[str, Any]) -> None:
    """traces/metrics: PostgreSQL's CPU per 1,000 rows for ingestd and the raw COPY, and how
    busy ingestd's writers were (where a stored-rows gap comes from)."""
    for table in ("traces", "metrics"):
        sink = quick_report["throughput"][table]["sink"]
        raw = quick_report["baselines"][table]
        assert sink["server_cpu_ms_per_1000_rows"] > 0, sink
        # The raw writers of a quick run may finish inside the window: then it says so.
        assert raw.get("server_cpu_ms_per_1000_rows", 0) > 0 or "server_note" in raw, raw
        assert sink["server_runqueue_cores"] >= 0
        assert "server_note" in raw or raw["server_runqueue_cores"] >= 0
        assert 0 < sink["writer_busy"] <= 1.05, sink
        assert sink["write_ms_per_batch"] > 0
        assert sink["machine_idle_cores"] >= 0
        assert raw["machine_idle_cores"] >= 0


def test_targets_carry_the_measured_ratios(quick_report: dict[str, Any]) -> None:
    """Each target has a value unless its section was skipped (the peers)."""
    unmeasured = {t["name"] for t in quick_report["targets"] if t["value"] is None}
    for target in quick_report["targets"]:
        if target["name"] in unmeasured:
            assert "Collector" in target["name"], target
        else:
            assert isinstance(target["value"], int | float), target
    memory = quick_report["memory"]
    assert memory["peak_rss_per_worker_mib"] > 0
    assert memory["idle_rss_mib"] > 0
