"""The discarding writer behind `discard: true`: acknowledges every part, stores nothing."""

from __future__ import annotations

import asyncio

from ingestd.batching import Batch, Batcher
from ingestd.config import BatchConfig, BufferConfig, RetryConfig
from ingestd.model import Part, PartResult
from ingestd.pipeline import deadline_in
from ingestd.sinks.discard import DiscardWriter


def _part(items: int) -> Part:
    return Part(payload=[b"x"] * items, items=items, nbytes=items * 10)


async def test_every_part_is_reported_stored() -> None:
    """write_batch answers one plain success per part, in order, and counts the items."""
    writer = DiscardWriter("traces")
    batch = Batch(parts=[_part(3), _part(5)], items=8, nbytes=80, reason="size")
    results = await writer.write_batch(batch)
    assert list(results) == [PartResult(), PartResult()]
    assert writer.status() == {"batches": 1, "discarded_items": 8}


async def test_a_batcher_over_it_acknowledges_committed_waiters() -> None:
    """A part submitted to a batcher that writes through it completes as stored."""
    writer = DiscardWriter("logs")
    batcher = Batcher(
        "logs",
        writer,
        batch=BatchConfig(max_rows=4, flush_interval_s=0.01),
        buffer=BufferConfig(),
        writers=1,
        retry=RetryConfig(),
    )
    async with asyncio.TaskGroup() as tasks:
        await batcher.start(tasks)
        part = await batcher.submit(_part(4), timeout_s=1.0)
        assert await asyncio.wait_for(part.done, 5.0) == PartResult()
        await batcher.stop(deadline_in(1.0))
    assert writer.status()["discarded_items"] == 4
