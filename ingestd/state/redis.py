"""Redis: the state every replica shares (dedup keys, pressure, rate limits).

Redis trouble never stops ingest: every call is bounded by `redis.timeout_ms`, and while Redis
does not answer the component is DEGRADED (still ready) rather than UNAVAILABLE.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
import structlog

from ingestd.config import RedisConfig

log = structlog.get_logger("ingestd.state.redis")


class RedisState:
    name = "redis"

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self._client: aioredis.Redis | None = None

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("RedisState used before start()")
        return self._client

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        timeout = self.config.timeout_ms / 1000
        self._client = aioredis.Redis.from_url(
            self.config.url,
            socket_timeout=timeout,
            socket_connect_timeout=max(timeout, 0.5),
            retry_on_timeout=False,
            health_check_interval=0,
        )

    async def stop(self, deadline: float) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def probe(self) -> None:
        """Return when Redis answers PING; raise otherwise."""
        await self.client.ping()
