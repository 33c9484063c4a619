"""SIGTERM as an operator sends it: under load, with a database that does not answer, twice.

The first signal drains: readiness fails, new requests are refused with a retry hint while the
listeners are still open, requests in flight are answered, every acknowledged span is stored
exactly once, and the process exits 0 within `shutdown.grace_s`. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from tests.harness import IngestdProcess, base_config, deep_merge
from tests.integration.conftest import Stack
from tests.integration.ops_support import OWN_CONNECTION, Answer, Exporter, post_http
from tests.integration.test_outages import _port
from tests.proxy import Proxy

pytestmark = pytest.mark.integration

GRACE_S = 8.0


def config_for(dsn: str, stack: Stack, **override: Any) -> dict[str, Any]:
    return deep_merge(
        base_config(dsn, stack.es_url, stack.redis_url),
        deep_merge(
            {
                "sinks": {
                    "elasticsearch": {"enabled": False},
                    # Parts wait up to 1 s for their batch (not cut early for an idle
                    # writer): a drain always finds requests in flight, and the listeners stay
                    # open (refusing) while they finish.
                    "timescale": {
                        "batch": {
                            "flush_interval_s": 1.0,
                            "max_rows": 100_000,
                            "flush_when_idle": False,
                        }
                    },
                },
                "shutdown": {"grace_s": GRACE_S},
            },
            override,
        ),
    )


def all_draining(proc: IngestdProcess, workers: int) -> None:
    """Wait until every process serving requests has begun its drain."""
    wanted = {None} if workers == 1 else set(range(workers))
    for index in wanted:
        proc.wait_for_event(
            lambda e, i=index: e.get("event") == "draining" and e.get("worker") == i
        )


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


async def keep_exporting(ex: Exporter, stop: asyncio.Event, *, via_http: bool = False) -> None:
    """One client: send requests until *stop*, retrying each on a retryable error like an OTLP
    exporter (after the hint), giving up 3 s after *stop*."""
    async with (
        grpc.aio.insecure_channel(ex.grpc_target, options=OWN_CONNECTION) as channel,
        aiohttp.ClientSession() as session,
    ):
        while not stop.is_set():
            request = ex.request(20)
            body = request.SerializeToString()
            ids = [s.span_id for s in request.resource_spans[0].scope_spans[0].spans]
            give_up_at = float("inf")
            while time.monotonic() < give_up_at:
                if via_http:
                    answer = await ex.http_once(session, body, ids)
                else:
                    answer = await ex.grpc_once(channel, body, ids)
                if answer.ok:
                    break
                if stop.is_set() and give_up_at == float("inf"):
                    give_up_at = time.monotonic() + 3.0
                await asyncio.sleep(min(answer.retry_after_s or 0.2, 0.5))


def answered_with_a_hint(answer: Answer) -> bool:
    return answer.code in ("UNAVAILABLE", "503") and (answer.retry_after_s or 0) > 0


@pytest.mark.parametrize("workers", [1, 2], ids=["workers=1", "workers=2"])
async def test_sigterm_under_load_refuses_new_answers_in_flight_and_loses_nothing(
    stack: Stack, timescale_db: str, tmp_path: Path, workers: int
) -> None:
    """SIGTERM with 6 clients exporting: new requests (on new connections too) get UNAVAILABLE
    + RetryInfo / 503 + Retry-After until the listeners close; every acknowledged span is
    stored exactly once; exit 0 within the grace period (with workers, through the supervisor)."""
    proc = IngestdProcess(config_for(timescale_db, stack, workers=workers), tmp_path)
    try:
        proc.wait_ready()
        grpc_port = proc.port_of("grpc_listening")
        http_url = f"http://127.0.0.1:{proc.port_of('http_receiver_listening')}"
        ex = Exporter(f"127.0.0.1:{grpc_port}", http_url)
        stop = asyncio.Event()
        clients = [asyncio.ensure_future(keep_exporting(ex, stop)) for _ in range(4)]
        clients += [
            asyncio.ensure_future(keep_exporting(ex, stop, via_http=True)) for _ in range(2)
        ]
        await asyncio.sleep(2.5)
        assert any(a.ok for a in ex.answers)

        signalled = time.time()
        proc.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(all_draining, proc, workers)
        # New requests after the signal, on new connections: refused with a retry hint.
        probe = ex.request(5)
        async with grpc.aio.insecure_channel(ex.grpc_target, options=OWN_CONNECTION) as channel:
            refused = await ex.grpc_once(channel, probe.SerializeToString(), [])
        status, headers, _ = await asyncio.to_thread(
            post_http, f"{http_url}/v1/traces", probe.SerializeToString()
        )
        ready, _ = await asyncio.to_thread(proc.get, "/readyz")
        stop.set()

        code = await asyncio.to_thread(proc.proc.wait, GRACE_S + 5)
        drained_s = time.time() - signalled
        await asyncio.gather(*clients)
    finally:
        proc.kill()

    assert code == 0
    assert drained_s < GRACE_S
    assert ready == 503
    assert refused.code == "UNAVAILABLE"
    assert refused.retry_after_s is not None
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert headers.get("Connection", "").lower() == "close"

    # Until a listener closed, every request answered after the signal was either stored or
    # refused with a hint (never cut without a status).
    # (With workers, a connection is refused only once every worker's listener closed: the
    # kernel sends new ones to those still listening.)
    first_closing: dict[object, float] = {}
    for e in proc.events:
        if e.get("event") == "receiver_closing":
            first_closing.setdefault(e.get("worker"), event_time(e))
    closing = max(first_closing.values())
    after = [a for a in ex.answers if signalled < a.at < closing]
    assert after
    assert all(a.ok or answered_with_a_hint(a) for a in after), [
        (a.transport, a.code, a.retry_after_s) for a in after if not a.ok
    ]
    # Nothing acknowledged is lost, nothing is stored twice.
    from tests.integration.load import stored_counts

    counts = await asyncio.to_thread(stored_counts, timescale_db)
    acked = ex.acked_span_ids()
    assert acked
    assert [sid for sid in acked if counts.get(sid) != 1] == []
    assert [sid for sid, n in counts.items() if n > 1] == []
    names = [e.get("event") for e in proc.events]
    assert names[-1] == "stopped"
    assert "drain_incomplete" not in names
    print(f"drain took {drained_s:.2f} s; {len(after)} answers between signal and close")
    for e in proc.events:
        if event_time(e) >= signalled - 0.01 and e.get("event") != "non_json_line":
            print(f"  +{event_time(e) - signalled:6.3f} s {e.get('event')} {e.get('stage', '')}")


@asynccontextmanager
async def cut_from_its_database(
    stack: Stack, timescale_db: str, tmp_path: Path, grace_s: float
) -> AsyncIterator[tuple[IngestdProcess, Exporter, grpc.aio.Channel]]:
    """A ready daemon whose PostgreSQL (through a proxy) then refuses and cuts every
    connection: the daemon, an exporter to it and an open gRPC channel; killed on exit."""
    async with Proxy("127.0.0.1", _port(stack.pg_dsn)) as proxy:
        config = config_for(
            proxy.dsn(timescale_db),
            stack,
            pressure={"enabled": False},
            shutdown={"grace_s": grace_s},
            sinks={"timescale": {"batch": {"flush_interval_s": 0.05}}},
        )
        proc = IngestdProcess(config, tmp_path)
        try:
            # The proxy runs in this event loop: block it no longer than a moment.
            await asyncio.to_thread(proc.wait_ready)
            ex = Exporter(f"127.0.0.1:{proc.port_of('grpc_listening')}")
            proxy.refuse(True)
            await proxy.cut_all()
            async with grpc.aio.insecure_channel(ex.grpc_target) as channel:
                yield proc, ex, channel
        finally:
            proc.kill()


async def test_requests_not_stored_by_the_deadline_are_answered_unavailable(
    stack: Stack, timescale_db: str, tmp_path: Path
) -> None:
    """With PostgreSQL unreachable, requests waiting for their commit at SIGTERM are answered
    UNAVAILABLE + RetryInfo before the grace period ends, and the process exits 0 in time."""
    async with cut_from_its_database(stack, timescale_db, tmp_path, grace_s=4) as (
        proc,
        ex,
        channel,
    ):
        waiting = [
            asyncio.ensure_future(ex.grpc_once(channel, ex.request(10).SerializeToString(), [], 20))
            for _ in range(5)
        ]
        await asyncio.sleep(1.0)
        assert not any(w.done() for w in waiting)
        signalled = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*waiting)
        answered_s = time.monotonic() - signalled
        code = await asyncio.to_thread(proc.proc.wait, 10)
        exited_s = time.monotonic() - signalled
    assert [(a.code, a.retry_after_s is not None) for a in answers] == [("UNAVAILABLE", True)] * 5
    assert answered_s < 4
    assert code == 0
    assert exited_s < 4 + 2  # the grace period, plus the interpreter's exit
    assert any(e.get("event") == "requests_unanswered_at_drain_deadline" for e in proc.events)


async def test_second_signal_stops_at_once(stack: Stack, timescale_db: str, tmp_path: Path) -> None:
    """A second SIGTERM during a drain that would take long ends the process within seconds,
    with exit code 1."""
    async with cut_from_its_database(stack, timescale_db, tmp_path, grace_s=60) as (
        proc,
        ex,
        channel,
    ):
        waiting = asyncio.ensure_future(
            ex.grpc_once(channel, ex.request(10).SerializeToString(), [], 30)
        )
        await asyncio.sleep(0.5)
        proc.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(all_draining, proc, 1)
        began = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.proc.wait, 10)
        stopped_s = time.monotonic() - began
        answer = await waiting
    assert code == 1
    assert stopped_s < 3
    assert not answer.ok  # cut without an answer; the client retries
    assert any(e.get("action") == "abort" for e in proc.events)
