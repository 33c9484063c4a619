"""`ingestd run` as an operator sees it: readiness follows servers, SIGTERM drains, exit 0."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import IngestdProcess, base_config, deep_merge
from tests.integration.conftest import Stack


@pytest.fixture
def ingestd(stack: Stack, database: str, tmp_path: Path) -> Iterator[IngestdProcess]:
    config = base_config(database, stack.es_url, stack.redis_url)
    proc = IngestdProcess(config, tmp_path)
    yield proc
    proc.kill()


def test_becomes_ready_when_all_servers_answer(ingestd: IngestdProcess) -> None:
    """/livez answers at once; /readyz turns 200 once PostgreSQL, Elasticsearch and Redis answer."""
    ingestd.wait_ready(200)
    status, _ = ingestd.get("/livez")
    assert status == 200
    health = json.loads(ingestd.get("/readyz")[1])
    assert health["ready"] is True
    assert {"timescale", "elasticsearch", "redis"} <= set(health["components"])


def test_readiness_follows_a_stopped_server(ingestd: IngestdProcess, stack: Stack) -> None:
    """/readyz turns 503 while PostgreSQL is stopped and 200 again when it is back."""
    ingestd.wait_ready(200)
    stack.stop("postgres")
    try:
        ingestd.wait_ready(503, timeout_s=30)
        body = json.loads(ingestd.get("/readyz")[1])
        assert body["components"]["timescale"]["state"] == "unavailable"
    finally:
        stack.start("postgres")
    ingestd.wait_ready(200, timeout_s=60)


def test_redis_down_is_degraded_but_ready(stack: Stack, database: str, tmp_path: Path) -> None:
    """Redis not answering makes ingestd degraded, not unready: ingest does not depend on it."""
    config = deep_merge(base_config(database, stack.es_url, "redis://127.0.0.1:1/0"), {})
    proc = IngestdProcess(config, tmp_path)
    try:
        proc.wait_ready(200)
        health = json.loads(proc.get("/readyz")[1])
        assert health["degraded"] is True
        assert health["components"]["redis"]["state"] == "degraded"
    finally:
        proc.kill()


def test_sigterm_exits_zero_within_grace(ingestd: IngestdProcess) -> None:
    """SIGTERM drains and exits 0 well within shutdown.grace_s, logging each stage stopping."""
    ingestd.wait_ready(200)
    began = time.monotonic()
    code = ingestd.terminate(timeout_s=15)
    assert code == 0
    assert time.monotonic() - began < 10
    names = [e.get("event") for e in ingestd.events]
    assert "draining" in names
    assert names[-1] == "stopped"


def test_bad_config_exits_2_naming_every_problem(tmp_path: Path) -> None:
    """A bad config file makes `ingestd run` exit 2 and name each problem on stderr."""
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text("receivers: {grpc: {endpoint: nope}}\nsinks: {timescale: {writers: 0}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "ingestd", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "receivers.grpc.endpoint" in result.stderr
    assert "sinks.timescale.writers" in result.stderr
