"""An overload far beyond capacity: RSS stays near its bound, clients are told to retry, and
everything acknowledged is stored once the load stops.

32 clients send distinct 3,000-span requests (~1.1 MB each) as fast as they are answered;
unguarded, this takes one ingestd from ~100 MiB to over 300 MiB (docs/operations.md, "Memory").
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import psutil
import pytest

from tests.harness import IngestdProcess, base_config, deep_merge, retry_delay_s
from tests.integration.conftest import Stack
from tests.integration.load import stored_counts
from tests.integration.ops_support import OWN_CONNECTION, TRACE_EXPORT, scrape, value
from tests.samples import span_request

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
MAX_RSS_MIB = 200
# Requests admitted below the bound keep growing after it is crossed, and grpc buffers
# messages before ingestd is asked: measured overshoot 5-23 % of the bound with 24-48 such
# clients on the shared dev machine (docs/operations.md, "Memory"). Unguarded, the same load
# takes RSS to ~280-320 MiB; the check leaves room for 25 %.
PEAK_ALLOWED = MAX_RSS_MIB * MiB * 1.25
CLIENTS = 32
LOAD_S = 6.0


async def test_overload_keeps_rss_near_its_bound_and_loses_nothing(
    stack: Stack, timescale_db: str, tmp_path: Path
) -> None:
    """RSS peaks within 25 % of memory.max_rss_mib; refusals are UNAVAILABLE + RetryInfo,
    counted as memory refusals; afterwards requests are admitted again and every acknowledged
    span is stored exactly once."""
    config = deep_merge(
        base_config(timescale_db, stack.es_url, stack.redis_url),
        {
            "sinks": {
                "elasticsearch": {"enabled": False},
                "timescale": {"batch": {"flush_interval_s": 0.05}},
            },
            "memory": {"max_rss_mib": MAX_RSS_MIB, "check_interval_ms": 50},
        },
    )
    proc = IngestdProcess(config, tmp_path)
    try:
        await asyncio.to_thread(proc.wait_ready)
        process = psutil.Process(proc.proc.pid)
        idle_rss = process.memory_info().rss
        assert idle_rss < (MAX_RSS_MIB - 40) * MiB, f"idle RSS {idle_rss >> 20} MiB leaves no room"
        target = f"127.0.0.1:{proc.port_of('grpc_listening')}"
        acked: list[bytes] = []
        refused: list[float | None] = []
        others: list[str] = []
        template = span_request(3000)
        spans = template.resource_spans[0].scope_spans[0].spans
        stop = asyncio.Event()
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, process.memory_info().rss)
                await asyncio.sleep(0.02)

        async def client() -> None:
            async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
                export = channel.unary_unary(
                    TRACE_EXPORT, request_serializer=None, response_deserializer=None
                )
                while not stop.is_set():
                    ids = []
                    for span in spans:  # a distinct request: dedup would join identical ones
                        span.span_id = os.urandom(8)
                        ids.append(span.span_id)
                    try:
                        await export(template.SerializeToString(), timeout=30)
                    except grpc.aio.AioRpcError as error:
                        if error.code() is not grpc.StatusCode.UNAVAILABLE:
                            others.append(error.code().name)
                        delay = retry_delay_s(error)
                        refused.append(delay)
                        await asyncio.sleep(min(delay or 0.2, 0.3))
                    else:
                        acked.extend(ids)

        sampler = asyncio.ensure_future(sample())
        clients = [asyncio.ensure_future(client()) for _ in range(CLIENTS)]
        await asyncio.sleep(LOAD_S)
        stop.set()
        await asyncio.gather(*clients)
        await sampler
        metrics = scrape(proc)

        # The overload is over: a request is admitted again within a few seconds.
        recovered_at = None
        async with grpc.aio.insecure_channel(target) as channel:
            export = channel.unary_unary(
                TRACE_EXPORT, request_serializer=None, response_deserializer=None
            )
            began = time.monotonic()
            while time.monotonic() - began < 15 and recovered_at is None:
                small = span_request(10)
                try:
                    await export(small.SerializeToString(), timeout=10)
                    recovered_at = time.monotonic() - began
                    acked.extend(s.span_id for s in small.resource_spans[0].scope_spans[0].spans)
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.5)
        assert await asyncio.to_thread(proc.terminate) == 0
    finally:
        proc.kill()

    print(
        f"idle {idle_rss / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB (bound {MAX_RSS_MIB}), "
        f"{len(acked) // 3000} requests stored, {len(refused)} refused, "
        f"admitting again after {recovered_at} s"
    )
    assert others == []
    assert refused
    assert all(delay is not None and delay > 0 for delay in refused)
    assert value(metrics, "ingestd_memory_refused_requests_total", reason="rss") > 0
    assert value(metrics, "ingestd_receiver_refused_requests_total", reason="MemoryPressure") > 0
    assert peak <= PEAK_ALLOWED
    assert recovered_at is not None
    counts = await asyncio.to_thread(stored_counts, timescale_db)
    assert acked
    assert [sid for sid in acked if counts.get(sid) != 1] == []
    assert [sid for sid, n in counts.items() if n > 1] == []
