"""The admin HTTP server: /livez, /readyz, /status (JSON) and /metrics (Prometheus).

It starts before the pipeline and stops after it, so probes answer through startup and drain:
/readyz is 503 while starting, while draining, and while a required component is unavailable.
/livez is 200 while the process's event loop answers; it never depends on the sinks. With
`workers: N > 1` the supervisor serves this on the public port (its components are the
workers, its /metrics adds up every worker's files) and each worker one on a private port.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from ingestd import __version__
from ingestd.config import AdminConfig
from ingestd.observe.health import Health

log = structlog.get_logger("ingestd.observe.admin")

StatusSource = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]


class AdminServer:
    name = "admin"

    def __init__(
        self,
        config: AdminConfig,
        health: Health,
        *,
        sources: Callable[[], Mapping[str, StatusSource]],
        event: str = "admin_listening",
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        """*sources()* names what /status shows besides the health board: the daemon's
        stages' `status` (`Pipeline.status_sources`), or the supervisor's own."""
        self.config = config
        self.health = health
        self._registry = registry
        # A worker's private admin server logs under another name than the public one.
        self._event = event
        self._sources = sources
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, _, port = self.config.endpoint.rpartition(":")
        # Not shared between processes: with workers the supervisor alone serves this port.
        site = web.TCPSite(self._runner, host, int(port))
        await site.start()
        # Port 0 in the config means "any free port" (tests); report the one we got.
        self.port = int(self._runner.addresses[0][1])
        log.info(self._event, endpoint=f"{host}:{self.port}")

    async def stop(self, deadline: float) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = self.health.ready
        body = orjson.dumps(self.health.status(), option=orjson.OPT_INDENT_2)
        return web.Response(
            body=body, status=200 if ready else 503, content_type="application/json"
        )

    async def _status(self, request: web.Request) -> web.Response:
        payload: dict[str, Any] = {"version": __version__, "health": self.health.status()}
        for name, source in self._sources().items():
            value = source()
            payload[name] = await value if inspect.isawaitable(value) else value
        return web.Response(
            body=orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS),
            content_type="application/json",
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
