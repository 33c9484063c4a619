"""The daemon: wires the config into a pipeline, serves it, and drains it on a signal.

The first SIGTERM or SIGINT drains: readiness fails, both receivers refuse new requests at once
(UNAVAILABLE + RetryInfo, 503 + Retry-After) and answer those in flight, buffers flush within
`shutdown.grace_s`, and the process exits 0; requests still waiting for their commit shortly
before the deadline are answered UNAVAILABLE. A second signal cancels everything at once
(exit 1, forced after 2 s). This is one process; with `workers: N > 1` the supervisor
(`ingestd.supervisor`) runs N of these as workers (`ingestd.workers`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ingestd import __version__
from ingestd.admin import AdminServer
from ingestd.auth import Authenticator
from ingestd.batching import Batcher, BatchWriter, StatsSource
from ingestd.config import Config, ElasticsearchSinkConfig, TimescaleSinkConfig
from ingestd.convert import metrics, traces
from ingestd.convert.logs import LogsConverter, RoutePolicy
from ingestd.health import Health, Prober, State
from ingestd.ingest import Converter, Ingest, Route, Signal, answer_deadline, request_limits
from ingestd.memory import MemoryGuard
from ingestd.metrics import BUILD_INFO, DRAINING, WORKERS_CONFIGURED, WORKERS_RUNNING
from ingestd.pipeline import Pipeline, Stage, StartupError, deadline_in
from ingestd.process import ProcessSampler
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
from ingestd.workers import Control, WorkerSpec

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
    memory: MemoryGuard
    stages: dict[str, Stage] = field(default_factory=dict)


def build(config: Config, config_path: Path | None = None, *, workers: int = 1) -> Daemon:
    """Build every stage from its config section, downstream first. Raises ConfigError.

    *workers* > 1 builds one worker of several: its receivers share their ports
    (SO_REUSEPORT) and the RSS guard's automatic bound is shared among them.
    """
    health = Health()
    prober = Prober(health, config.admin.check_interval_s)
    admin = AdminServer(
        config.admin, health, event="worker_admin_listening" if workers > 1 else "admin_listening"
    )
    memory = MemoryGuard(config.memory, workers=workers, health=health)
    admin.add_status("memory", memory.status)
    stages: list[Stage] = [memory]
    # One route per signal whose sink is enabled; a signal without one answers UNIMPLEMENTED.
    routes: dict[Signal, Route] = {}

    if config.sinks.timescale.enabled and config.sinks.timescale.discard:
        routes |= _discard_routes(config, (Signal.TRACES, Signal.METRICS), admin, memory)
    elif config.sinks.timescale.enabled:
        timescale = TimescaleSink(config.sinks.timescale)
        prober.add("timescale", timescale.probe)
        admin.add_status("timescale", timescale.status)
        stages.append(timescale)
        if config.maintenance.enabled:
            # Retention, partitions, rollups, ledger pruning; one replica acts per interval.
            maintenance = MaintenanceJob(config.sinks.timescale.dsn, config.maintenance)
            admin.add_status("maintenance", maintenance.snapshot)
            stages.append(maintenance)
        routes |= _timescale_routes(config, timescale, admin, memory)
    if config.sinks.elasticsearch.enabled and config.sinks.elasticsearch.discard:
        routes |= _discard_routes(config, (Signal.LOGS,), admin, memory)
    elif config.sinks.elasticsearch.enabled:
        elasticsearch = ElasticsearchSink(config.sinks.elasticsearch)
        prober.add("elasticsearch", elasticsearch.probe)
        stages.append(elasticsearch)
        routes[Signal.LOGS] = _logs_route(config, elasticsearch, admin, memory)
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
        memory=memory,
    )
    receivers: list[OtlpGrpcReceiver | OtlpHttpReceiver] = []
    shared_ports = workers > 1
    if config.receivers.grpc.enabled:
        receivers.append(
            OtlpGrpcReceiver(config.receivers.grpc, ingest, shared.auth, reuse_port=shared_ports)
        )
    if config.receivers.http.enabled:
        receivers.append(
            OtlpHttpReceiver(config.receivers.http, ingest, shared.auth, reuse_port=shared_ports)
        )
    for receiver in receivers:
        admin.add_status(receiver.name, receiver.stats)
    sampler = ProcessSampler(
        config,
        lambda: {"admin": admin.port, **{r.name.rpartition(".")[2]: r.port for r in receivers}},
    )
    admin.add_status("process", sampler.status)
    stages.insert(1, sampler)
    stages += receivers

    return Daemon(
        config=config,
        health=health,
        admin=admin,
        pipeline=Pipeline(stages),
        ingest=ingest,
        shared=shared,
        memory=memory,
        stages={s.name: s for s in stages},
    )


# Per Timescale signal: its table, the table's COPY columns, and its converter.
_TABLES: dict[Signal, tuple[str, Sequence[tuple[str, str]], Callable[..., Converter]]] = {
    Signal.TRACES: (traces.TABLE, traces.COLUMNS, traces.TraceConverter),
    Signal.METRICS: (metrics.TABLE, metrics.COLUMNS, metrics.MetricConverter),
}


def _timescale_routes(
    config: Config, sink: TimescaleSink, admin: AdminServer, memory: MemoryGuard
) -> dict[Signal, Route]:
    """Traces and metrics: converter -> Batcher -> TimescaleWriter, one chain per table."""
    section = config.sinks.timescale
    routes: dict[Signal, Route] = {}
    for kind, (table, columns, _) in _TABLES.items():
        writer = TimescaleWriter(sink, table=table, columns=columns, signal=kind)
        batcher = _batcher(table, writer, section, config, memory)
        admin.add_status(batcher.name, _merged(batcher.stats, writer.stats))
        routes[kind] = Route(
            _converter(config, kind), batcher, _converter(config, kind, large=True)
        )
    return routes


def _discard_routes(
    config: Config, signals: Sequence[Signal], admin: AdminServer, memory: MemoryGuard
) -> dict[Signal, Route]:
    """Benchmarks: the signals' batchers acknowledge every batch and store nothing."""
    routes: dict[Signal, Route] = {}
    for kind in signals:
        section = config.sinks.elasticsearch if kind is Signal.LOGS else config.sinks.timescale
        name = "logs" if kind is Signal.LOGS else _TABLES[kind][0]
        writer = DiscardWriter(name)
        batcher = _batcher(name, writer, section, config, memory)
        admin.add_status(batcher.name, _merged(batcher.stats, writer.stats))
        policy = _route_policy(config) if kind is Signal.LOGS else None
        routes[kind] = Route(
            _converter(config, kind, policy),
            batcher,
            _converter(config, kind, policy, large=True),
        )
    log.warning("sink_discarding", signals=[str(s) for s in signals], data="dropped by design")
    return routes


def _batcher(
    name: str,
    writer: BatchWriter,
    section: TimescaleSinkConfig | ElasticsearchSinkConfig,
    config: Config,
    memory: MemoryGuard,
) -> Batcher:
    """A sink section's batcher: its batch, buffer, writer and retry settings, the process-wide
    memory budget; with `ack: accepted` a batch is retried until it is written or ingestd stops."""
    return Batcher(
        name,
        writer,
        batch=section.batch,
        buffer=section.buffer,
        writers=section.writers,
        retry=section.retry,
        retry_until_stopped=config.ingest.ack == "accepted",
        budget=memory.budget,
    )


# The thread's converters (large requests) keep a smaller attribute cache than the event
# loop's (48 MiB), so that the second instance adds at most this much per signal.
_LARGE_CACHE_BYTES = 16 * 1024 * 1024


def _converter(
    config: Config, kind: Signal, routes: RoutePolicy | None = None, *, large: bool = False
) -> Converter:
    skew = config.ingest.max_future_skew_s
    if kind is Signal.LOGS:
        es = config.sinks.elasticsearch
        return LogsConverter(
            dataset=es.logs_dataset,
            namespace=es.logs_namespace,
            max_future_skew_s=skew,
            routes=routes,
        )
    return _TABLES[kind][2](
        max_future_skew_s=skew,
        limits=request_limits(config.ingest),
        **({"cache_bytes": _LARGE_CACHE_BYTES} if large else {}),
    )


def _merged(*sources: StatsSource) -> StatsSource:
    return lambda: {k: v for source in sources for k, v in source().items()}


def _logs_route(
    config: Config, sink: ElasticsearchSink, admin: AdminServer, memory: MemoryGuard
) -> Route:
    """Logs: OTLP -> bulk items (convert/logs.py) -> Batcher(logs) -> BulkWriter."""
    batcher = _batcher("logs", sink.bulk_writer(), config.sinks.elasticsearch, config, memory)
    admin.add_status(batcher.name, batcher.stats)
    routes = _route_policy(config)
    admin.add_status("logs_routing", routes.status)
    return Route(
        _converter(config, Signal.LOGS, routes),
        batcher,
        _converter(config, Signal.LOGS, routes, large=True),
    )


def _route_policy(config: Config) -> RoutePolicy:
    """One per process: both logs converters (event loop, thread) share its routes and cap."""
    routing = config.sinks.elasticsearch.routing
    return RoutePolicy(
        from_attributes=routing.from_attributes,
        allowed_datasets=routing.allowed_datasets,
        allowed_namespaces=routing.allowed_namespaces,
        max_routes=routing.max_data_streams,
    )


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
    config: Config,
    config_path: Path | None = None,
    *,
    early_signals: list[int] | None = None,
    worker: WorkerSpec | None = None,
) -> None:
    """Run until the first signal, then drain within the grace period. Raises StartupError.

    *config_path* is re-read on SIGHUP and when it changes (auth tokens and limits only).
    *early_signals* are signals caught before the event loop ran; the first one drains.
    *worker* is set in a worker process of a supervisor (workers: N > 1).
    """
    stopping = _watch_signals()
    if early_signals:
        log.info("signal_received", signal=signal.Signals(early_signals[0]).name, action="drain")
        stopping.set()
    daemon = build(config, config_path, workers=worker.count if worker else 1)
    BUILD_INFO.labels(version=__version__).set(1)
    DRAINING.set(0)
    if worker is None:
        WORKERS_CONFIGURED.set(1)
        WORKERS_RUNNING.set(1)
    control = Control(worker.control_fd) if worker else None
    try:
        await _serve(daemon, config, stopping, control)
    except BaseExceptionGroup as group:
        # The TaskGroup wraps a failed start in a group; the CLI reports the one line.
        failed = group.subgroup(StartupError)
        if failed is None:
            raise
        first = failed.exceptions[0]
        raise first from first.__cause__
    log.info("stopped")


async def _serve(
    daemon: Daemon, config: Config, stopping: asyncio.Event, control: Control | None
) -> None:
    async with asyncio.TaskGroup() as tasks:
        await daemon.admin.start(tasks)
        if control is not None:
            control.send(event="admin", port=daemon.admin.port)
        try:
            await daemon.pipeline.start(tasks)
            daemon.health.started = True
            log.info("ingestd_ready_to_serve", version=__version__)
            await stopping.wait()
        finally:
            deadline = deadline_in(config.shutdown.grace_s)
            # Readiness fails first, and both receivers refuse new requests from now on.
            daemon.health.draining = True
            DRAINING.set(1)
            daemon.ingest.begin_drain(answer_deadline(deadline))
            if daemon.health.started:
                log.info("draining", grace_s=config.shutdown.grace_s)
            await daemon.pipeline.stop(deadline)
            await daemon.admin.stop(deadline_in(1.0))


# After a second signal, cancellation gets this long to unwind before the process is ended.
_ABORT_S = 2.0
EXIT_ABORTED = 1


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
            # A stage that does not unwind (a thread inflating a body, a hung server) must not
            # keep the process alive: "stops at once" is a promise.
            timer = threading.Timer(_ABORT_S, os._exit, (EXIT_ABORTED,))
            timer.daemon = True
            timer.start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stopping
