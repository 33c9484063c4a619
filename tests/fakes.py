"""Test doubles that stand in for time and for a sink's write side (unit tests only)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Sequence

from ingestd.batching import Batch
from ingestd.errors import IngestdError
from ingestd.model import PartResult


class FakeClock:
    """A clock that moves only when the test says so; sleepers wake as it passes them."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        self.t += seconds
        while self._sleepers and self._sleepers[0][0] <= self.t:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        await settle()


class FakeRss:
    """A process RSS reading (bytes) the test sets; called like the memory guard's probe."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self) -> int:
        return self.value


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until the loop is quiet (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class RecordingWriter:
    """Stores batches in memory; can be told to fail the next calls or to hang."""

    name = "recording"

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.failures: list[IngestdError] = []
        self.gate: asyncio.Event | None = None
        self.calls = 0
        self.reject_items: dict[int, tuple[int, str]] = {}

    async def write_batch(self, batch: Batch) -> Sequence[PartResult]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(batch)
        return [PartResult(*self.reject_items.get(id(p), (0, ""))) for p in batch.parts]

    @property
    def items(self) -> list[object]:
        return [row for b in self.batches for p in b.parts for row in p.payload]
