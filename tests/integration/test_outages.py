"""Outages between ingestd and PostgreSQL: a successful answer still means stored, exactly once.

Clients keep exporting unique spans and retry like OTLP exporters; a ledger of what each request
was told is compared with the rows afterwards (tests/integration/load.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.harness import config_text, free_port, query, running, stubs
from tests.integration.conftest import Stack
from tests.integration.load import Clients, assert_exactly_once, stored_counts
from tests.proxy import CommitCut, Proxy
from tests.samples import span_request

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Outage tests fail fast: ack within 2 s or UNAVAILABLE (the client retries); one writer so
# that a cut COMMIT is the only COMMIT in flight.
OUTAGE_INGEST = {"ack_timeout_s": 2.0, "enqueue_timeout_s": 0.5}
ONE_WRITER = {"timescale": {"writers": 1, "pool": {"min_size": 1, "max_size": 2}}}


@contextlib.asynccontextmanager
async def exporting(clients: Clients) -> AsyncIterator[asyncio.Event]:
    """Run *clients* in the background; on exit, stop them and wait for their retries."""
    stop = asyncio.Event()
    task = asyncio.create_task(clients.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await task


async def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll *condition* (state changed by other tasks and servers) until true or timeout."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the state is set by other tasks and servers
            await asyncio.sleep(0.05)


async def test_postgres_stopped_under_load(timescale_db: str, stack: Stack) -> None:
    """PostgreSQL down: clients get UNAVAILABLE + RetryInfo; afterwards all is stored once."""
    text = config_text(timescale_db, ingest=OUTAGE_INGEST)
    async with running(text) as ingestd:
        clients = Clients(ingestd.target, count=4, spans=20)
        async with exporting(clients):
            await wait_for(lambda: len(clients.acked) >= 8)
            try:
                await asyncio.to_thread(stack.stop, "postgres")
                await wait_for(lambda: "UNAVAILABLE" in clients.errors(), timeout_s=15)
            finally:
                await asyncio.to_thread(stack.start, "postgres")
            acked_at_restart = len(clients.acked)
            await wait_for(lambda: len(clients.acked) >= acked_at_restart + 8, timeout_s=60)
    assert all(s.unavailable_without_retry_info == 0 for s in clients.sent)
    assert all(s.acked for s in clients.sent), "every request was stored once PostgreSQL came back"
    assert_exactly_once(timescale_db, clients)


@pytest.mark.parametrize("when", ["before", "during", "after"])
async def test_connection_cut_at_commit_stores_exactly_once(
    timescale_db: str, stack: Stack, when: CommitCut
) -> None:
    """A connection cut before, during or after COMMIT: the request is stored exactly once."""
    async with Proxy("127.0.0.1", _port(stack.pg_dsn)) as proxy:
        text = config_text(proxy.dsn(timescale_db), sinks=ONE_WRITER)
        async with running(text) as ingestd, stubs(ingestd.target) as (traces, _):
            await traces.Export(span_request(10, tag="warm-up"))
            cut = proxy.cut_at_commit(when)
            request = span_request(50, tag=f"cut-{when}")
            answer = await traces.Export(request, timeout=30)
            assert cut.is_set(), "the proxy cut the COMMIT of this request's batch"
            stats = ingestd.status("traces")
    assert not answer.HasField("partial_success")
    spans = request.resource_spans[0].scope_spans[0].spans
    counts = dict(query(timescale_db, "SELECT spanid, count(*) FROM traces GROUP BY 1"))
    assert [counts.get(s.span_id) for s in spans] == [1] * 50
    assert stats["retries"] >= 1
    if when == "after":
        assert stats["duplicate_parts"] == 1, "the retry found the committed request in the ledger"
    if when == "before":
        assert stats["duplicate_parts"] == 0, "nothing was committed before the retry"


async def test_commit_cuts_under_concurrent_load(timescale_db: str, stack: Stack) -> None:
    """Repeated COMMIT cuts while clients export: every acknowledged span is stored once."""
    async with Proxy("127.0.0.1", _port(stack.pg_dsn)) as proxy:
        text = config_text(proxy.dsn(timescale_db), ingest=OUTAGE_INGEST)
        async with running(text) as ingestd:
            clients = Clients(ingestd.target, count=4, spans=30)
            async with exporting(clients):
                for when in ("after", "during", "before", "after", "during", "after"):
                    await wait_for(proxy.cut_at_commit(when).is_set)
                    await asyncio.sleep(0.2)
            stats = ingestd.status("traces")
    assert stats["duplicate_parts"] >= 1
    assert all(s.acked for s in clients.sent)
    assert_exactly_once(timescale_db, clients)


async def test_all_connections_cut_and_refused(timescale_db: str, stack: Stack) -> None:
    """Live connections cut and new ones refused: UNAVAILABLE + RetryInfo, then recovery."""
    async with Proxy("127.0.0.1", _port(stack.pg_dsn)) as proxy:
        text = config_text(proxy.dsn(timescale_db), ingest=OUTAGE_INGEST)
        async with running(text) as ingestd:
            clients = Clients(ingestd.target, count=3, spans=20)
            async with exporting(clients):
                await wait_for(lambda: len(clients.acked) >= 5)
                proxy.refuse()
                assert await proxy.cut_all() >= 1
                await wait_for(lambda: "UNAVAILABLE" in clients.errors(), timeout_s=15)
                proxy.refuse(False)
                acked = len(clients.acked)
                await wait_for(lambda: len(clients.acked) >= acked + 5, timeout_s=60)
                await proxy.cut_all()
    assert all(s.unavailable_without_retry_info == 0 for s in clients.sent)
    assert all(s.acked for s in clients.sent)
    assert_exactly_once(timescale_db, clients)


async def test_slow_database_link_fills_the_buffer(timescale_db: str, stack: Stack) -> None:
    """A slow link fills the bounded buffer: clients are refused with RetryInfo, none lost."""
    async with Proxy("127.0.0.1", _port(stack.pg_dsn)) as proxy:
        proxy.latency_s = 0.05
        text = config_text(
            proxy.dsn(timescale_db),
            ingest={"enqueue_timeout_s": 0.1, "ack_timeout_s": 10},
            sinks={"timescale": {"buffer": {"max_items": 200}, "batch": {"max_rows": 100}}},
        )
        async with running(text) as ingestd:
            clients = Clients(ingestd.target, count=6, spans=50)
            async with exporting(clients):
                await wait_for(lambda: "UNAVAILABLE" in clients.errors(), timeout_s=30)
                proxy.latency_s = 0.0
            refused = ingestd.status("traces").get("refused_buffer_full", 0)
    assert refused > 0
    assert all(s.unavailable_without_retry_info == 0 for s in clients.sent)
    assert all(s.acked for s in clients.sent)
    assert_exactly_once(timescale_db, clients)


def _port(dsn: str) -> int:
    return int(psycopg.conninfo.conninfo_to_dict(dsn).get("port") or 5432)


def _spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`ingestd run` as a separate process, its log appended to *log*."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ingestd", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _assert_running(process: subprocess.Popen[bytes], log: Path) -> None:
    assert process.poll() is None, log.read_text()[-3000:]


async def _until_serving(target: str, process: subprocess.Popen[bytes], log: Path) -> None:
    async with asyncio.timeout(30), stubs(target) as (traces, _):
        while True:
            _assert_running(process, log)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await traces.Export(span_request(0), timeout=1)
                return
            await asyncio.sleep(0.1)


async def test_kill_9_loses_no_acknowledged_request(timescale_db: str, tmp_path: Path) -> None:
    """kill -9 while clients export: every OK'd request is stored; retries after restart once."""
    grpc_port = free_port()
    config = tmp_path / "ingestd.yaml"
    config.write_text(
        config_text(
            timescale_db,
            receivers={"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}},
            admin={"endpoint": f"127.0.0.1:{free_port()}"},
        )
    )
    log = tmp_path / "ingestd.log"
    target = f"127.0.0.1:{grpc_port}"
    process = _spawn(config, log)
    try:
        await _until_serving(target, process, log)
        clients = Clients(target, count=4, spans=25)
        async with exporting(clients):
            await wait_for(lambda: len(clients.acked) >= 20)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            acked_before_kill = list(clients.acked)
            counts = stored_counts(timescale_db)
            lost = [s for s in acked_before_kill if any(counts.get(i) != 1 for i in s.span_ids)]
            assert not lost, f"{len(lost)} requests answered OK are not stored once"
            process = _spawn(config, log)
            await _until_serving(target, process, log)
            acked = len(clients.acked)
            await wait_for(lambda: len(clients.acked) >= acked + 10, timeout_s=60)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert all(s.acked for s in clients.sent), "requests cut by the kill were retried and stored"
    assert_exactly_once(timescale_db, clients)
