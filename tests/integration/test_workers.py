"""`workers: 2`: both processes take traffic, one killed with SIGKILL is survived and
restarted, and the supervisor's /metrics adds up both."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from tests.harness import IngestdProcess, base_config, deep_merge
from tests.integration.conftest import Stack
from tests.integration.load import stored_counts
from tests.integration.ops_support import OWN_CONNECTION, Exporter, scrape, status_json, value

pytestmark = pytest.mark.integration

CONNECTIONS = 8


def _at(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def grpc_ok(worker_status: dict[str, object]) -> int:
    receiver = worker_status["receiver.grpc"]
    assert isinstance(receiver, dict)
    requests = receiver["requests"]
    assert isinstance(requests, dict)
    return int(requests.get("ok", 0))


async def export_for(ex: Exporter, seconds: float) -> None:
    """CONNECTIONS clients, each on its own connection, retrying like OTLP exporters."""

    async def one() -> None:
        async with grpc.aio.insecure_channel(ex.grpc_target, options=OWN_CONNECTION) as channel:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                request = ex.request(20)
                ids = [s.span_id for s in request.resource_spans[0].scope_spans[0].spans]
                answer = await ex.grpc_once(channel, request.SerializeToString(), ids, 5)
                if not answer.ok:
                    await asyncio.sleep(min(answer.retry_after_s or 0.1, 0.3))

    await asyncio.gather(*(one() for _ in range(CONNECTIONS)))


async def test_two_workers_share_traffic_survive_a_kill_and_add_up(
    stack: Stack, timescale_db: str, tmp_path: Path
) -> None:
    """Both workers serve; SIGKILL of one: the other keeps serving, the dead one is restarted
    with a new pid and logged; /metrics counts both; every acknowledged span is stored once."""
    config = deep_merge(
        base_config(timescale_db, stack.es_url, stack.redis_url),
        {
            "workers": 2,
            "sinks": {
                "elasticsearch": {"enabled": False},
                "timescale": {"batch": {"flush_interval_s": 0.05}},
            },
        },
    )
    proc = IngestdProcess(config, tmp_path)
    try:
        await asyncio.to_thread(proc.wait_ready)
        ex = Exporter(f"127.0.0.1:{proc.port_of('grpc_listening')}")
        await export_for(ex, 3.0)
        status = await asyncio.to_thread(status_json, proc)
        per_worker = {i: grpc_ok(s) for i, s in status["workers"].items()}
        pids = [w["pid"] for w in status["supervisor"]["workers"]]
        metrics = await asyncio.to_thread(scrape, proc)

        # Kill one worker while clients keep exporting; the other one serves them.
        victim = pids[0]
        killed_at = len(ex.answers)
        os.kill(victim, signal.SIGKILL)
        await export_for(ex, 2.0)
        served_meanwhile = sum(1 for a in ex.answers[killed_at:] if a.ok)
        exited = await asyncio.to_thread(
            proc.wait_for_event, lambda e: e.get("event") == "worker_exited", 10
        )
        restarted = await asyncio.to_thread(
            proc.wait_for_event,
            lambda e: e.get("event") == "worker_started" and e.get("pid") not in pids,
            20,
        )
        await asyncio.to_thread(proc.wait_ready)
        after = await asyncio.to_thread(status_json, proc)
        final_metrics = await asyncio.to_thread(scrape, proc)
        assert await asyncio.to_thread(proc.terminate) == 0
    finally:
        proc.kill()

    back = next(
        e
        for e in proc.events
        if e.get("event") == "component_state"
        and e.get("component") == f"worker.{exited['worker']}"
        and e.get("state") == "ok"
        and _at(e) > _at(exited)
    )
    print(
        f"requests per worker: {per_worker}; served during the restart: {served_meanwhile}; "
        f"ready again {_at(back) - _at(exited):.1f} s after the kill was noticed"
    )
    # Both workers took traffic, and /metrics is their sum.
    assert len(per_worker) == 2
    assert all(n > 0 for n in per_worker.values()), per_worker
    assert value(metrics, "ingestd_receiver_requests_total", transport="grpc", status="ok") == sum(
        per_worker.values()
    )
    assert {
        lab["pid"] for n, lab, _ in metrics if n == "ingestd_process_resident_memory_bytes"
    } >= {str(p) for p in pids}
    assert value(metrics, "ingestd_workers_running") == 2
    # The kill was survived: the other worker kept answering, the dead one came back.
    assert served_meanwhile > 0
    assert exited["pid"] == victim
    assert exited["reason"] == "SIGKILL"
    assert restarted["worker"] == exited["worker"]
    new_pids = [w["pid"] for w in after["supervisor"]["workers"]]
    assert victim not in new_pids
    assert restarted["pid"] in new_pids
    assert value(final_metrics, "ingestd_worker_restarts_total", reason="SIGKILL") == 1
    # Counters of the dead worker stay in the totals (archived, not lost).
    ok_total = "ingestd_receiver_requests_total"
    assert value(final_metrics, ok_total, status="ok") >= value(metrics, ok_total, status="ok")
    # Nothing acknowledged is lost, nothing is stored twice.
    counts = await asyncio.to_thread(stored_counts, timescale_db)
    acked = ex.acked_span_ids()
    assert [sid for sid in acked if counts.get(sid) != 1] == []
    assert [sid for sid, n in counts.items() if n > 1] == []


async def test_a_hung_worker_is_killed_and_restarted(
    stack: Stack, timescale_db: str, tmp_path: Path
) -> None:
    """A worker that stops answering (SIGSTOP) is killed after 3 failed checks and restarted;
    the restart is counted with reason "hung"."""
    config = deep_merge(
        base_config(timescale_db, stack.es_url, stack.redis_url),
        {"workers": 2, "sinks": {"elasticsearch": {"enabled": False}}},
    )
    proc = IngestdProcess(config, tmp_path)
    try:
        await asyncio.to_thread(proc.wait_ready)
        status = await asyncio.to_thread(status_json, proc)
        victim = status["supervisor"]["workers"][1]["pid"]
        os.kill(victim, signal.SIGSTOP)
        hung = await asyncio.to_thread(
            proc.wait_for_event, lambda e: e.get("event") == "worker_hung", 20
        )
        exited = await asyncio.to_thread(
            proc.wait_for_event, lambda e: e.get("event") == "worker_exited", 10
        )
        await asyncio.to_thread(proc.wait_ready, 200, 30)
        metrics = await asyncio.to_thread(scrape, proc)
        assert await asyncio.to_thread(proc.terminate) == 0
    finally:
        proc.kill()
    assert hung["pid"] == victim
    assert exited["reason"] == "hung"
    assert value(metrics, "ingestd_worker_restarts_total", reason="hung") == 1


def test_a_worker_failing_to_start_fails_the_start(
    stack: Stack, timescale_db: str, tmp_path: Path
) -> None:
    """A worker that cannot start (a TLS key that does not exist) makes `ingestd run` exit 1
    with one line naming the cause, as one process would; nothing is left running."""
    config = deep_merge(
        base_config(timescale_db, stack.es_url, stack.redis_url),
        {
            "workers": 2,
            "receivers": {
                "grpc": {"tls": {"cert_file": "/nonexistent.pem", "key_file": "/nonexistent.key"}}
            },
        },
    )
    proc = IngestdProcess(config, tmp_path)
    try:
        code = proc.proc.wait(timeout=60)
    finally:
        proc.kill()
    assert code == 1
    failed = [e for e in proc.events if e.get("event") == "startup_failed"]
    assert any("exited during start-up" in str(e.get("error")) for e in failed)
    assert any("nonexistent.key" in str(e.get("error")) for e in failed)  # the worker's line
    own_files = Path(tempfile.gettempdir()).glob(f"ingestd-metrics-*/*_{proc.proc.pid}.db")
    assert list(own_files) == []  # the run's metrics directory went with it
