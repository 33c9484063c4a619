"""Requests a receiver is answering right now, so that its drain can wait for them (both
transports count the same way and stop the same way)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from ingestd.pipeline import remaining


class InFlight:
    """A counter of requests being answered, and an event set whenever it reaches zero."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Count one request while the block runs."""
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                self._idle.set()

    async def drained(self, deadline: float) -> bool:
        """Wait until no request is in flight, or until *deadline* (monotonic): False then."""
        try:
            async with asyncio.timeout(remaining(deadline)):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
