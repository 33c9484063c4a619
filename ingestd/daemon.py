"""The daemon: wires the config into a pipeline, serves it, and drains it on a signal.

The first SIGTERM or SIGINT drains (readiness fails first, receivers stop, buffers flush within
`shutdown.grace_s`); a second one cancels everything at once.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ingestd import __version__
from ingestd.admin import AdminServer
from ingestd.auth import Authenticator
from ingestd.config import Config
from ingestd.health import Health, Prober, State
from ingestd.metrics import BUILD_INFO
from ingestd.pipeline import Pipeline, Stage, deadline_in
from ingestd.reload import ConfigReloader
from ingestd.sinks.elasticsearch import ElasticsearchSink
from ingestd.sinks.timescale import TimescaleSink
from ingestd.state.dedup import RedisDedup
from ingestd.state.pressure import ClusterPressure
from ingestd.state.ratelimit import RateLimiter
from ingestd.state.redis import RedisState

log = structlog.get_logger("ingestd.daemon")


@dataclass
class SharedState:
    """The shared-state pieces Ingest and the receivers use (see README, "Shared state").

    Ingest(config.ingest, routes, dedup=..., pressure=..., limits=...); each route's batcher
    is watched with `pressure.watch(signal, batcher, sink_component)`; receivers call
    `auth.authenticate(authorization)` before reading the body.
    """

    auth: Authenticator
    dedup: RedisDedup
    pressure: ClusterPressure
    limits: RateLimiter


@dataclass
class Daemon:
    """Everything one ingestd process runs, built from the config."""

    config: Config
    health: Health
    admin: AdminServer
    pipeline: Pipeline
    shared: SharedState
    stages: dict[str, Stage] = field(default_factory=dict)


def build(config: Config, config_path: Path | None = None) -> Daemon:
    """Build every stage from its config section, downstream first. Raises ConfigError."""
    health = Health()
    prober = Prober(health, config.admin.check_interval_s)
    admin = AdminServer(config.admin, health)
    stages: list[Stage] = []

    if config.sinks.timescale.enabled:
        timescale = TimescaleSink(config.sinks.timescale)
        prober.add("timescale", timescale.probe)
        stages.append(timescale)
    if config.sinks.elasticsearch.enabled:
        elasticsearch = ElasticsearchSink(config.sinks.elasticsearch)
        prober.add("elasticsearch", elasticsearch.probe)
        stages.append(elasticsearch)
    redis = None
    if config.redis.enabled:
        redis = RedisState(config.redis, health)
        # Redis is shared state, not storage: without it ingest goes on, degraded.
        prober.add("redis", redis.probe, required=False, when_failing=State.DEGRADED)
        admin.add_status("redis", redis.status)
        stages.append(redis)
    shared = _shared_state(config, config_path, redis, health)
    admin.add_status("pressure", shared.pressure.status)
    stages += [shared.dedup, shared.pressure]
    stages.append(ConfigReloader(config_path, config, shared.auth, shared.limits))
    stages.append(prober)

    return Daemon(
        config=config,
        health=health,
        admin=admin,
        pipeline=Pipeline(stages),
        shared=shared,
        stages={s.name: s for s in stages},
    )


def _shared_state(
    config: Config, config_path: Path | None, redis: RedisState | None, health: Health
) -> SharedState:
    pressure = ClusterPressure(config.pressure, redis, health)
    return SharedState(
        auth=Authenticator(config.auth),
        # A replica that dies mid-request leaves its marker: it expires a bit after the
        # longest a request can wait for its commit, so a retry may then take it over.
        dedup=RedisDedup(config.dedup, redis, in_flight_ttl_s=config.ingest.ack_timeout_s + 5),
        pressure=pressure,
        limits=RateLimiter(config.limits, redis, replicas=pressure.live_replicas),
    )


async def serve(
    config: Config, config_path: Path | None = None, *, early_signals: list[int] | None = None
) -> None:
    """Run until the first signal, then drain within the grace period. Raises StartupError.

    *config_path* is re-read on SIGHUP and when it changes (auth tokens and limits only).
    *early_signals* are signals caught before the event loop ran; the first one drains.
    """
    stopping = _watch_signals()
    if early_signals:
        log.info("signal_received", signal=signal.Signals(early_signals[0]).name, action="drain")
        stopping.set()
    daemon = build(config, config_path)
    BUILD_INFO.labels(version=__version__).set(1)
    async with asyncio.TaskGroup() as tasks:
        await daemon.admin.start(tasks)
        try:
            await daemon.pipeline.start(tasks)
            daemon.health.started = True
            log.info("ingestd_ready_to_serve", version=__version__)
            await stopping.wait()
            log.info("draining", grace_s=config.shutdown.grace_s)
        finally:
            daemon.health.draining = True
            await daemon.pipeline.stop(deadline_in(config.shutdown.grace_s))
            await daemon.admin.stop(deadline_in(1.0))
    log.info("stopped")


def _watch_signals() -> asyncio.Event:
    """Return an event set by the first SIGTERM/SIGINT; the second one cancels the main task."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    main = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if not stopping.is_set():
            log.info("signal_received", signal=signal.Signals(signum).name, action="drain")
            stopping.set()
        else:
            log.warning("signal_received", signal=signal.Signals(signum).name, action="abort")
            if main is not None:
                main.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stopping
