"""Jittered exponential backoff under a deadline, and the clock that the batcher and tests share.

"Full jitter" (a uniform draw between 0 and the current cap) spreads the retries of many
replicas that lost the same server at the same moment, so they do not come back in lockstep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Protocol

from ingestd.config import RetryConfig


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""

    async def sleep(self, seconds: float) -> None:
        """Sleep for *seconds* of this clock's time."""


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


def backoff_delays(config: RetryConfig, rng: random.Random | None = None) -> Iterator[float]:
    """Endless delays: full jitter over a cap that doubles from initial to max backoff."""
    draw = (rng or random).uniform
    cap = config.initial_backoff_s
    while True:
        # Never below a tenth of the initial backoff: a zero draw would hammer the server.
        yield max(config.initial_backoff_s / 10, draw(0, cap))
        cap = min(cap * 2, config.max_backoff_s)
