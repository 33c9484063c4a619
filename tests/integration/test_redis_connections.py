"""RedisState's own connections against the real Redis behind a proxy: a reply that comes too
late or a cut connection never answers a later command (the shared server is not stopped)."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from ingestd.errors import StateUnavailable
from ingestd.state.redis import Script
from tests.integration.conftest import Stack
from tests.integration.redis_helpers import redis_state
from tests.proxy import Proxy


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_a_late_reply_is_never_read_as_a_later_commands_answer(
    stack: Stack, redis_prefix: str
) -> None:
    """A command that timed out leaves its connection closed: the next one reads its own reply."""
    upstream = urlsplit(stack.redis_url)
    async with Proxy(upstream.hostname or "127.0.0.1", upstream.port or 6379, postgres=False) as p:
        url = _through(stack.redis_url, p.port)
        async with redis_state(url, redis_prefix, timeout_ms=100, open_s=0.05) as state:
            key_a, key_b = f"{redis_prefix}a".encode(), f"{redis_prefix}b".encode()
            assert await state.command("t", "SET", key_a, b"old") is True
            p.latency_s = 0.3
            with pytest.raises(StateUnavailable, match="timed out"):
                await state.command("t", "GET", key_a)
            p.latency_s = 0.0
            await asyncio.sleep(0.4)  # the late reply arrives, on a connection now closed
            answers = []
            for _ in range(20):  # past the breaker's open time, on a new connection
                try:
                    answers.append(await state.command("t", "SET", key_b, b"new", get=True))
                    answers.append(await state.command("t", "GET", key_b))
                    break
                except StateUnavailable:
                    await asyncio.sleep(0.05)
            assert answers[-1] == b"new"
            assert b"old" not in answers


async def test_a_cut_connection_is_replaced(stack: Stack, redis_prefix: str) -> None:
    """Connections reset under RedisState fail at most the commands in flight; then it recovers
    on a new connection, and queued done marks (`send`) still reach Redis by stop."""
    upstream = urlsplit(stack.redis_url)
    async with Proxy(upstream.hostname or "127.0.0.1", upstream.port or 6379, postgres=False) as p:
        url = _through(stack.redis_url, p.port)
        key = f"{redis_prefix}k".encode()
        async with redis_state(url, redis_prefix, timeout_ms=200, open_s=0.05) as state:
            assert await state.command("t", "PING") in (True, b"PONG")
            assert await p.cut_all() >= 1
            answered = None
            for _ in range(20):
                try:
                    answered = await state.command("t", "SET", key, b"v")
                    break
                except StateUnavailable:
                    await asyncio.sleep(0.05)
            assert answered is True
            state.send("dedup_finish", "SET", key, b"D", "EX", 60)
        # redis_state stopped it: the queued mark was sent before the connections closed.
    async with redis_state(stack.redis_url, redis_prefix) as direct:
        assert await direct.command("t", "GET", key) == b"D"


async def test_a_script_redis_does_not_know_is_loaded_and_run(
    stack: Stack, redis_prefix: str
) -> None:
    """EVALSHA of a script not in Redis's cache (NOSCRIPT) loads it and runs it, in one call."""
    # A source of this test's own: never in the cache, and no other session's cache is flushed.
    script = Script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    key = f"{redis_prefix}n".encode()
    async with redis_state(stack.redis_url, redis_prefix, timeout_ms=500) as state:
        first, second = await asyncio.gather(
            state.run_script("t", script, [key], [2]), state.command("t", "PING")
        )
        assert first == 2
        assert second in (True, b"PONG")
        assert await state.run_script("t", script, [key], [3]) == 5
