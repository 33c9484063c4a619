"""RedisState's send path when the connection dies under it (no server: a fake client)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ingestd.config import RedisConfig
from ingestd.errors import StateUnavailable
from ingestd.state.redis import RedisState


class _Pool:
    def __init__(self) -> None:
        self.disconnects = 0

    async def disconnect(self, inuse_connections: bool = True) -> None:
        self.disconnects += 1


class _ClosedTransportClient:
    """What redis-py does on a reset connection under uvloop: a RuntimeError escapes."""

    def __init__(self) -> None:
        self.connection_pool = _Pool()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")


async def test_closed_transport_fails_the_call_and_leaves_no_task_exception() -> None:
    """A RuntimeError from a dead transport is a lost connection: StateUnavailable, pool reset."""
    state = RedisState(RedisConfig(timeout_ms=1000))
    client = _ClosedTransportClient()
    state._client = client  # type: ignore[assignment]
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        with pytest.raises(StateUnavailable, match="connection lost"):
            await state.command("ping", "PING")
        await asyncio.gather(*state._sending)
    finally:
        loop.set_exception_handler(previous)
    assert client.connection_pool.disconnects == 1
    assert unretrieved == []
