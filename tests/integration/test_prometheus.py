"""A real Prometheus (Debian's) scrapes a running ingestd: the alert rules and every dashboard
query evaluate on real data without error, and a healthy ingestd fires no alert."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from tests.harness import IngestdProcess, base_config, free_port
from tests.integration.conftest import Stack
from tests.opskit import RULES, dashboard_recording_rules, prometheus_tool
from tests.samples import span_request

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def ingestd(stack: Stack, timescale_db: str, tmp_path: Path) -> Iterator[IngestdProcess]:
    proc = IngestdProcess(base_config(timescale_db, stack.es_url, stack.redis_url), tmp_path)
    try:
        proc.wait_ready(200)
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def prometheus(ingestd: IngestdProcess, tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping ingestd every second, evaluating the kit's rules every second."""
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(dashboard_recording_rules()))
    admin = ingestd.admin_url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES), str(tmp_path / "dashboard.yaml")],
        "scrape_configs": [{"job_name": "ingestd", "static_configs": [{"targets": [admin]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "prometheus.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [
                prometheus_tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not _answers(url + "/-/ready"):
                assert proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.2)
            assert _answers(url + "/-/ready"), log.read_text()[-2000:]
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def api(base: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}/api/v1/{path}{query}", timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


def test_rules_and_dashboard_queries_evaluate_on_real_data(
    ingestd: IngestdProcess, prometheus: str
) -> None:
    """Every rule evaluates without error; the accepted-items panel shows the spans sent."""
    target = f"127.0.0.1:{ingestd.port_of('grpc_listening')}"
    with grpc.insecure_channel(target) as channel:
        export = trace_service_pb2_grpc.TraceServiceStub(channel).Export
        for _ in range(5):
            export(span_request(20), timeout=10)
            time.sleep(0.5)

    accepted = "sum(ingestd_receiver_accepted_items_total)"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = api(prometheus, "query", query=accepted)["result"]
        if result and float(result[0]["value"][1]) >= 100:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"Prometheus never saw the 100 spans: {result}")
    time.sleep(3)  # a few rule evaluations over the new samples

    groups = api(prometheus, "rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) > 40
    unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert unhealthy == {}

    # The accepted-items panel (a rate over the scrapes) has a value for traces.
    panel = next(r for r in rules if "ingestd_receiver_accepted_items_total" in r["query"])
    series = api(prometheus, "query", query=panel["name"])["result"]
    assert any(s["metric"].get("signal") == "traces" for s in series), series

    firing = [a for a in api(prometheus, "alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []
