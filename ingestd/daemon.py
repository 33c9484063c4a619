"""The daemon: wires the config into a pipeline, serves it, and drains it on a signal.

The first SIGTERM or SIGINT drains (readiness fails first, receivers stop, buffers flush within
`shutdown.grace_s`); a second one cancels everything at once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ingestd import __version__
from ingestd.admin import AdminServer
from ingestd.auth import Authenticator
from ingestd.batching import Batcher, StatsSource
from ingestd.config import Config
from ingestd.convert import metrics, traces
from ingestd.convert.logs import LogsConverter
from ingestd.health import Health, Prober, State
from ingestd.ingest import Converter, Ingest, Route, Signal
from ingestd.metrics import BUILD_INFO
from ingestd.pipeline import Pipeline, Stage, deadline_in
from ingestd.receiver.otlp_grpc import OtlpGrpcReceiver
from ingestd.receiver.otlp_http import OtlpHttpReceiver
from ingestd.reload import ConfigReloader
from ingestd.schema.logs_retention import LogsRetention
from ingestd.schema.stage import MaintenanceJob
from ingestd.sinks.discard import DiscardWriter
from ingestd.sinks.elasticsearch import ElasticsearchSink
from ingestd.sinks.timescale import TimescaleSink, TimescaleWriter
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
    # What both receivers call; benchmarks and tests may call it directly.
    ingest: Ingest
    shared: SharedState
    stages: dict[str, Stage] = field(default_factory=dict)


def build(config: Config, config_path: Path | None = None) -> Daemon:
    """Build every stage from its config section, downstream first. Raises ConfigError."""
    health = Health()
    prober = Prober(health, config.admin.check_interval_s)
    admin = AdminServer(config.admin, health)
    stages: list[Stage] = []
    # One route per signal whose sink is enabled; a signal without one answers UNIMPLEMENTED.
    routes: dict[Signal, Route] = {}

    if config.sinks.timescale.enabled and config.sinks.timescale.discard:
        routes |= _discard_routes(config, (Signal.TRACES, Signal.METRICS), admin)
    elif config.sinks.timescale.enabled:
        timescale = TimescaleSink(config.sinks.timescale)
        prober.add("timescale", timescale.probe)
        stages.append(timescale)
        if config.maintenance.enabled:
            # Retention, partitions, rollups, ledger pruning; one replica acts per interval.
            maintenance = MaintenanceJob(config.sinks.timescale.dsn, config.maintenance)
            admin.add_status("maintenance", maintenance.snapshot)
            stages.append(maintenance)
        routes |= _timescale_routes(config, timescale, admin)
    if config.sinks.elasticsearch.enabled and config.sinks.elasticsearch.discard:
        routes |= _discard_routes(config, (Signal.LOGS,), admin)
    elif config.sinks.elasticsearch.enabled:
        elasticsearch = ElasticsearchSink(config.sinks.elasticsearch)
        prober.add("elasticsearch", elasticsearch.probe)
        stages.append(elasticsearch)
        routes[Signal.LOGS] = _logs_route(config, elasticsearch, admin)
        if config.maintenance.enabled:
            retention = LogsRetention(elasticsearch, config.sinks.elasticsearch, config.maintenance)
            admin.add_status("logs_retention", retention.snapshot)
            stages.append(retention)
    redis = None
    if config.redis.enabled:
        redis = RedisState(config.redis, health)
        # Redis is shared state, not storage: without it ingest goes on, degraded.
        prober.add("redis", redis.probe, required=False, when_failing=State.DEGRADED)
        admin.add_status("redis", redis.status)
        stages.append(redis)
    shared = _shared_state(config, redis, health)
    admin.add_status("pressure", shared.pressure.status)
    # Dedup starts before the batchers and stops after them, so the done marks written while
    # they drain still reach Redis.
    stages += [shared.dedup, shared.pressure]
    stages.append(ConfigReloader(config_path, config, shared.auth, shared.limits))
    stages.append(prober)

    # Batchers sit between the sinks and the receivers: started after the sinks, stopped
    # after the receivers, so each drains into a stage that is still alive.
    for kind, route in routes.items():
        shared.pressure.watch(kind, route.batcher, _SINK_OF[kind])
        stages.append(route.batcher)
    ingest = Ingest(
        config.ingest,
        routes,
        dedup=shared.dedup,
        pressure=shared.pressure,
        limits=shared.limits,
    )
    if config.receivers.grpc.enabled:
        stages.append(OtlpGrpcReceiver(config.receivers.grpc, ingest, shared.auth))
    if config.receivers.http.enabled:
        stages.append(OtlpHttpReceiver(config.receivers.http, ingest, shared.auth))

    return Daemon(
        config=config,
        health=health,
        admin=admin,
        pipeline=Pipeline(stages),
        ingest=ingest,
        shared=shared,
        stages={s.name: s for s in stages},
    )


# Per Timescale signal: its table, the table's COPY columns, and its converter.
_TABLES: dict[Signal, tuple[str, Sequence[tuple[str, str]], Callable[..., Converter]]] = {
    Signal.TRACES: (traces.TABLE, traces.COLUMNS, traces.TraceConverter),
    Signal.METRICS: (metrics.TABLE, metrics.COLUMNS, metrics.MetricConverter),
}


def _timescale_routes(
    config: Config, sink: TimescaleSink, admin: AdminServer
) -> dict[Signal, Route]:
    """Traces and metrics: converter -> Batcher -> TimescaleWriter, one chain per table."""
    section = config.sinks.timescale
    routes: dict[Signal, Route] = {}
    for kind, (table, columns, _) in _TABLES.items():
        writer = TimescaleWriter(sink, table=table, columns=columns, signal=kind)
        batcher = Batcher(
            table,
            writer,
            batch=section.batch,
            buffer=section.buffer,
            writers=section.writers,
            retry=section.retry,
            retry_until_stopped=config.ingest.ack == "accepted",
        )
        admin.add_status(batcher.name, _merged(batcher.stats, writer.stats))
        routes[kind] = Route(_converter(config, kind), batcher)
    return routes


def _discard_routes(
    config: Config, signals: Sequence[Signal], admin: AdminServer
) -> dict[Signal, Route]:
    """Benchmarks: the signals' batchers acknowledge every batch and store nothing."""
    routes: dict[Signal, Route] = {}
    for kind in signals:
        section = config.sinks.elasticsearch if kind is Signal.LOGS else config.sinks.timescale
        name = "logs" if kind is Signal.LOGS else _TABLES[kind][0]
        writer = DiscardWriter(name)
        batcher = Batcher(
            name,
            writer,
            batch=section.batch,
            buffer=section.buffer,
            writers=section.writers,
            retry=section.retry,
        )
        admin.add_status(batcher.name, _merged(batcher.stats, writer.stats))
        routes[kind] = Route(_converter(config, kind), batcher)
    log.warning("sink_discarding", signals=[str(s) for s in signals], data="dropped by design")
    return routes


def _converter(config: Config, kind: Signal) -> Converter:
    skew = config.ingest.max_future_skew_s
    if kind is Signal.LOGS:
        es = config.sinks.elasticsearch
        return LogsConverter(
            dataset=es.logs_dataset, namespace=es.logs_namespace, max_future_skew_s=skew
        )
    return _TABLES[kind][2](max_future_skew_s=skew)


def _merged(*sources: StatsSource) -> StatsSource:
    return lambda: {k: v for source in sources for k, v in source().items()}


def _logs_route(config: Config, sink: ElasticsearchSink, admin: AdminServer) -> Route:
    """Logs: OTLP -> bulk items (convert/logs.py) -> Batcher(logs) -> BulkWriter."""
    es = config.sinks.elasticsearch
    batcher = Batcher(
        "logs",
        sink.bulk_writer(),
        batch=es.batch,
        buffer=es.buffer,
        writers=es.writers,
        retry=es.retry,
        retry_until_stopped=config.ingest.ack == "accepted",
    )
    admin.add_status(batcher.name, batcher.stats)
    return Route(convert=_converter(config, Signal.LOGS), batcher=batcher)


def _shared_state(config: Config, redis: RedisState | None, health: Health) -> SharedState:
    pressure = ClusterPressure(config.pressure, redis, health)
    return SharedState(
        auth=Authenticator(config.auth),
        # A replica that dies mid-request leaves its marker: it expires a bit after the
        # longest a request can wait for its commit, so a retry may then take it over.
        dedup=RedisDedup(config.dedup, redis, in_flight_ttl_s=config.ingest.ack_timeout_s + 5),
        pressure=pressure,
        limits=RateLimiter(config.limits, redis, replicas=pressure.live_replicas),
    )


# The sink component (health name) each signal's writes depend on, for cluster pressure.
_SINK_OF = {Signal.TRACES: "timescale", Signal.METRICS: "timescale", Signal.LOGS: "elasticsearch"}


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
