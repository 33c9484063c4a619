"""The admin HTTP server: /livez, /readyz, /status (JSON) and /metrics (Prometheus).

It starts before the pipeline and stops after it, so probes answer through startup and drain:
/readyz is 503 while starting, while draining, and while a required component is unavailable.
/livez is 200 while the process's event loop answers; it never depends on the sinks. With
`workers: N > 1` the supervisor serves this on the public port (its components are the
workers, its /metrics adds up every worker's files) and each worker one on a private port.

/status shows backend errors, hostnames and paths: with `admin.status_token` it answers only
that bearer token (401 + WWW-Authenticate otherwise), and /metrics too with
`metrics_need_token`. The probes never need one (kubelet sends none). `admin.tls` serves it all
over TLS (docs/security.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
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
from ingestd.tls import ServerTls, server_context, stop_web_server

log = structlog.get_logger("ingestd.observe.admin")

StatusSource = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        self._tls: ServerTls | None = None
        self._tls_watch: asyncio.Task[None] | None = None
        token = config.status_token
        self._token_sha256 = (
            hashlib.sha256(token.encode()).hexdigest() if token else config.status_token_sha256
        )
        self.port: int | None = None

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._guarded(self._status))
        metrics = self._guarded(self._metrics) if self.config.metrics_need_token else self._metrics
        app.router.add_get("/metrics", metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, _, port = self.config.endpoint.rpartition(":")
        self._tls = server_context(self.config.tls, "admin")
        if self._tls is not None:
            self._tls_watch = tasks.create_task(self._tls.watch(), name="admin-tls-reload")
        # Not shared between processes: with workers the supervisor alone serves this port.
        site = web.TCPSite(
            self._runner, host, int(port), ssl_context=self._tls.context if self._tls else None
        )
        await site.start()
        # Port 0 in the config means "any free port" (tests); report the one we got.
        self.port = int(self._runner.addresses[0][1])
        log.info(self._event, endpoint=f"{host}:{self.port}", tls=self._tls is not None)

    async def stop(self, deadline: float) -> None:
        runner, watch, self._runner, self._tls_watch = self._runner, self._tls_watch, None, None
        await stop_web_server(runner, watch)

    def _guarded(self, handler: Handler) -> Handler:
        """*handler* behind the status token (unchanged when no token is configured)."""
        expected = self._token_sha256
        if expected is None:
            return handler
        expected = expected.lower()

        async def guarded(request: web.Request) -> web.StreamResponse:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            given = hashlib.sha256(token.strip().encode()).hexdigest()
            if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
                return web.Response(
                    status=401,
                    text="a bearer token is needed (admin.status_token)\n",
                    headers={"WWW-Authenticate": 'Bearer realm="ingestd-admin"'},
                )
            return await handler(request)

        return guarded

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = self.health.ready
        snapshot = self.health.status()
        if self._token_sha256 is not None:
            # Details carry backend error text (hostnames, paths): they are on /status, behind
            # the token; the open probe shows states only.
            for component in snapshot["components"].values():
                component.pop("detail", None)
        body = orjson.dumps(snapshot, option=orjson.OPT_INDENT_2)
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
