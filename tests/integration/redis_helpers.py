"""Shared-state objects on the real Redis for tests: one RedisState per simulated replica."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from ingestd.config import BreakerConfig, RedisConfig
from ingestd.observe.health import Health
from ingestd.pipeline import deadline_in
from ingestd.state.redis import RedisState


@contextlib.asynccontextmanager
async def redis_state(
    url: str,
    prefix: str,
    *,
    timeout_ms: int = 25,
    failures_to_open: int = 5,
    open_s: float = 0.5,
    health: Health | None = None,
) -> AsyncIterator[RedisState]:
    """A started RedisState (one 'replica'); stopped on exit."""
    config = RedisConfig(
        url=url,
        key_prefix=prefix,
        timeout_ms=timeout_ms,
        breaker=BreakerConfig(failures_to_open=failures_to_open, open_s=open_s),
    )
    health = health or Health()
    health.register("redis", required=False)
    state = RedisState(config, health)
    async with asyncio.TaskGroup() as tasks:
        await state.start(tasks)
        try:
            yield state
        finally:
            await state.stop(deadline_in(1.0))


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts and reads but never answers: a hung Redis. Yields its URL."""
    held: list[Any] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0, family=socket.AF_INET)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for writer in held:
            writer.close()  # the handlers read EOF and end before the server closes
        await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
