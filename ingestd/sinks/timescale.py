"""The TimescaleDB sink: a psycopg async pool to the database that holds metrics and traces.

Connections are opened in the background, so ingestd starts (not ready) while PostgreSQL is
still down and becomes ready once it answers.
"""

from __future__ import annotations

import asyncio

import structlog
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ingestd.config import TimescaleSinkConfig
from ingestd.pipeline import remaining

log = structlog.get_logger("ingestd.sinks.timescale")


class TimescaleSink:
    name = "timescale"

    def __init__(self, config: TimescaleSinkConfig) -> None:
        self.config = config
        self._pool: AsyncConnectionPool[AsyncConnection] | None = None

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConnection]:
        if self._pool is None:
            raise RuntimeError("TimescaleSink used before start()")
        return self._pool

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Create the pool; connections are made in the background (no wait for the server)."""
        self._pool = AsyncConnectionPool(
            self.config.dsn,
            min_size=self.config.pool.min_size,
            max_size=self.config.pool.max_size,
            timeout=self.config.pool.connect_timeout_s,
            kwargs={"connect_timeout": max(1, round(self.config.pool.connect_timeout_s))},
            name="timescale",
            open=False,
        )
        await self._pool.open(wait=False)

    async def stop(self, deadline: float) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close(timeout=max(0.1, remaining(deadline)))

    async def probe(self) -> None:
        """Return when PostgreSQL answers a query; raise otherwise."""
        async with self.pool.connection(timeout=self.config.pool.connect_timeout_s) as conn:
            await conn.execute("SELECT 1")
