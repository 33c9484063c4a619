"""The daemon: wires the config into a pipeline, serves it, and drains it on a signal.

The first SIGTERM or SIGINT drains: readiness fails, both receivers refuse new requests at once
(UNAVAILABLE + RetryInfo, 503 + Retry-After) and answer those in flight, buffers flush within
`shutdown.grace_s`, and the process exits 0; requests still waiting for their commit shortly
before the deadline are answered UNAVAILABLE. A second signal cancels everything at once
(exit 1, forced after 2 s). This is one process; with `workers: N > 1` the supervisor
(`ingestd.workers.supervisor`) runs N of these as workers (`ingestd.workers.worker`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ingestd import __version__
from ingestd.alerts.stage import AlertsJob
from ingestd.appkeys import ApplicationKeys
from ingestd.auth import Authenticator
from ingestd.batching import Batcher, BatchWriter
from ingestd.config import Config, ElasticsearchSinkConfig, TimescaleSinkConfig
from ingestd.convert import native
from ingestd.convert.logs import RoutePolicy, route_policy
from ingestd.database_url import owner_dsn
from ingestd.ingest import Ingest, Route, answer_deadline
from ingestd.jobs.logs_retention import LogsRetention
from ingestd.jobs.maintenance import MaintenanceJob
from ingestd.memory import MemoryGuard
from ingestd.model import Signal
from ingestd.observe.admin import AdminServer
from ingestd.observe.health import Health, Prober
from ingestd.observe.metrics import BUILD_INFO, DRAINING, WORKERS_CONFIGURED, WORKERS_RUNNING
from ingestd.observe.process import LocalPorts, ProcessSampler
from ingestd.pipeline import Layer, Pipeline, Stage, StartupError, deadline_in
from ingestd.receiver.otlp_grpc import OtlpGrpcReceiver
from ingestd.receiver.otlp_http import OtlpHttpReceiver
from ingestd.reload import ConfigReloader
from ingestd.signals import SIGNALS, SignalSpec, SinkName
from ingestd.sinks.discard import DiscardWriter
from ingestd.sinks.elasticsearch import ElasticsearchSink
from ingestd.sinks.timescale import TimescaleSink, TimescaleWriter
from ingestd.state.dedup import RedisDedup
from ingestd.state.pressure import ClusterPressure
from ingestd.state.ratelimit import RateLimiter
from ingestd.state.redis import RedisState
from ingestd.workers.worker import PARENT_DEATH_SIGNAL, Control, WorkerSpec

log = structlog.get_logger("ingestd.daemon")


@dataclass
class SharedState:
    """The shared-state pieces Ingest and the receivers use (see docs/shared-state.md).

    Ingest(config.ingest, routes, dedup=..., pressure=..., limits=...) watches each route's
    batcher with the pressure; receivers call `await auth.identify(authorization)` before
    reading the body.
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
    """Build every stage from its config section and register it once, in its layer.

    Raises ConfigError. *workers* > 1 builds one worker of several: its receivers share their
    ports (SO_REUSEPORT) and the RSS guard's automatic bound is shared among them.
    """
    health = Health()
    pipeline = Pipeline()
    memory = MemoryGuard(config.memory, workers=workers, health=health)
    pipeline.add(Layer.INFRASTRUCTURE, memory, _CodecStatus(_codec_status(config)))
    sinks = _sinks(config, pipeline)
    redis = RedisState(config.redis, health) if config.redis.enabled else None
    if redis is not None:
        # Redis is shared state, not storage: without it ingest goes on, degraded.
        pipeline.add(Layer.SHARED_STATE, redis, required=False)
    shared = _shared_state(config, redis, health)
    keys = _application_keys(config, redis)
    if keys is not None:
        shared.auth.keys = keys
        pipeline.add(Layer.SHARED_STATE, keys)
    # Dedup starts before the batchers and stops after them, so the done marks written while
    # they drain still reach Redis.
    reloader = ConfigReloader(
        config_path,
        config,
        shared.auth,
        shared.limits,
        listeners=[sinks.alerts.reloaded] if sinks.alerts is not None else [],
    )
    pipeline.add(Layer.SHARED_STATE, shared.dedup, shared.pressure, reloader)
    # One per process: both logs converters (event loop, thread) share its routes and cap.
    policy = route_policy(config.sinks.elasticsearch.routing)
    if config.sinks.elasticsearch.enabled:
        pipeline.add(Layer.BATCHERS, _RoutingStatus(policy))
    routes = _routes(config, sinks, memory, policy)
    pipeline.add(Layer.BATCHERS, *(route.batcher for route in routes.values()))
    ingest = Ingest(
        config.ingest,
        routes,
        dedup=shared.dedup,
        pressure=shared.pressure,
        limits=shared.limits,
        memory=memory,
        count_application=keys.count if keys is not None else None,
    )
    receivers = _receivers(config, ingest, shared.auth, reuse_port=workers > 1)
    pipeline.add(Layer.RECEIVERS, *receivers)
    event = "worker_admin_listening" if workers > 1 else "admin_listening"
    admin = AdminServer(config.admin, health, sources=pipeline.status_sources, event=event)
    pipeline.add(Layer.INFRASTRUCTURE, ProcessSampler(config, _local_ports(admin, receivers)))
    # Last: it probes every stage registered above that has a probe.
    pipeline.add(
        Layer.SHARED_STATE, Prober(health, config.admin.check_interval_s, pipeline.probes())
    )
    return Daemon(
        config=config,
        health=health,
        admin=admin,
        pipeline=pipeline,
        ingest=ingest,
        shared=shared,
        memory=memory,
        stages={s.name: s for s in pipeline.stages},
    )


@dataclass
class _Sinks:
    """The storage sinks this process writes to (None: disabled, or discarding)."""

    timescale: TimescaleSink | None = None
    elasticsearch: ElasticsearchSink | None = None
    alerts: AlertsJob | None = None


def _sinks(config: Config, pipeline: Pipeline) -> _Sinks:
    """The enabled, storing sinks and the maintenance jobs that run on them."""
    sinks = _Sinks()
    maintain = config.maintenance.enabled
    if config.sinks.timescale.enabled and not config.sinks.timescale.discard:
        sinks.timescale = TimescaleSink(config.sinks.timescale)
        pipeline.add(Layer.SINKS, sinks.timescale)
        if maintain:
            # Retention, partitions, rollups, ledger pruning; one replica acts per interval.
            # DDL and run_job need the owner; the writers' role has neither.
            job = MaintenanceJob(owner_dsn(config.sinks.timescale), config.maintenance)
            pipeline.add(Layer.SINKS, job)
        if config.alerts.enabled:
            # Alert rules; one replica evaluates (docs/alerts.md). Rules reload on SIGHUP.
            es = config.sinks.elasticsearch if config.sinks.elasticsearch.enabled else None
            # It writes `alerts` and its own ingestd.alert_* tables: the owner's role, not the
            # writers' least-privilege one.
            sinks.alerts = AlertsJob(owner_dsn(config.sinks.timescale), config.alerts, es)
            pipeline.add(Layer.SINKS, sinks.alerts)
    es = config.sinks.elasticsearch
    if es.enabled and not es.discard:
        sinks.elasticsearch = ElasticsearchSink(es)
        pipeline.add(Layer.SINKS, sinks.elasticsearch)
        if maintain:
            pipeline.add(Layer.SINKS, LogsRetention(sinks.elasticsearch, es, config.maintenance))
    return sinks


@dataclass
class _CodecStatus:
    """The codec choice on /status (`ingestd.convert.native`): a stage with nothing to start or
    stop."""

    choice: dict[str, object]
    name: str = "codec"

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Nothing to acquire."""

    async def stop(self, deadline: float) -> None:
        """Nothing to release."""

    def status(self) -> dict[str, object]:
        return self.choice


@dataclass
class _RoutingStatus:
    """The logs route policy on /status (routes taken, records sent to the fallback): a stage
    with nothing to start or stop."""

    policy: RoutePolicy
    name: str = "logs_routing"

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Nothing to acquire."""

    async def stop(self, deadline: float) -> None:
        """Nothing to release."""

    def status(self) -> dict[str, object]:
        return self.policy.status()


def _routes(
    config: Config, sinks: _Sinks, memory: MemoryGuard, policy: RoutePolicy
) -> dict[Signal, Route]:
    """One route per signal whose sink is enabled: converter -> Batcher -> the sink's writer.

    A signal without a route answers UNIMPLEMENTED.
    """
    routes: dict[Signal, Route] = {}
    discarded: list[str] = []
    for spec in SIGNALS.values():
        section = _sink_config(config, spec.sink)
        if not section.enabled:
            continue
        if section.discard:
            discarded.append(spec.signal.value)
        writer = DiscardWriter(spec.store) if section.discard else _writer(spec, sinks)
        batcher = _batcher(spec.store, writer, section, config, memory)
        # The second converter, with caches of its own, converts large requests in a thread
        # (the native codec, thread-safe, is both: `convert.native.converters`).
        convert, convert_large = native.converters(spec, config, policy)
        routes[spec.signal] = Route(convert, batcher, convert_large)
    if discarded:
        # Benchmarks: these batchers acknowledge every batch and store nothing.
        log.warning("sink_discarding", signals=discarded, data="dropped by design")
    return routes


def _sink_config(config: Config, sink: SinkName) -> TimescaleSinkConfig | ElasticsearchSinkConfig:
    return config.sinks.timescale if sink == "timescale" else config.sinks.elasticsearch


def _writer(spec: SignalSpec, sinks: _Sinks) -> BatchWriter:
    """The writer of *spec*'s sink for its store (table or data stream family)."""
    if spec.sink == "timescale":
        assert sinks.timescale is not None
        return TimescaleWriter(
            sinks.timescale, table=spec.store, columns=spec.columns, signal=spec.signal
        )
    assert sinks.elasticsearch is not None
    return sinks.elasticsearch.bulk_writer()


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


def _codec_status(config: Config) -> dict[str, object]:
    """Resolve the codec (`ingestd.convert.native`), log the choice once; for /status."""
    codec, why = native.resolve(config.ingest.codec)
    status: dict[str, object] = {
        "codec": codec,
        "reason": why,
        "native_version": native.native_version(),
        "native_signals": [str(s) for s in native.native_signals(config)],
    }
    if codec == "python" and "missing" in why:
        log.warning("codec_fallback", codec=codec, reason=why)
    else:
        log.info("codec_selected", codec=codec, reason=why)
    return status


def _receivers(
    config: Config, ingest: Ingest, auth: Authenticator, *, reuse_port: bool
) -> list[OtlpGrpcReceiver | OtlpHttpReceiver]:
    receivers: list[OtlpGrpcReceiver | OtlpHttpReceiver] = []
    if config.receivers.grpc.enabled:
        grpc = config.receivers.grpc
        receivers.append(OtlpGrpcReceiver(grpc, ingest, auth, reuse_port=reuse_port))
    if config.receivers.http.enabled:
        http = config.receivers.http
        receivers.append(OtlpHttpReceiver(http, ingest, auth, reuse_port=reuse_port))
    return receivers


def _local_ports(
    admin: AdminServer, receivers: list[OtlpGrpcReceiver | OtlpHttpReceiver]
) -> LocalPorts:
    """The ports this process listens on (known once started), for the process sampler."""
    return lambda: {"admin": admin.port, **{r.name.rpartition(".")[2]: r.port for r in receivers}}


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


def _application_keys(config: Config, redis: RedisState | None) -> ApplicationKeys | None:
    """The ingest key cache when `auth.application_keys` is on; the keys live in the database
    the Timescale sink writes to."""
    keys = config.auth.application_keys
    if not (config.auth.enabled and keys.enabled):
        return None
    return ApplicationKeys(keys, config.sinks.timescale.dsn, redis)


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
    stopping = _watch_signals(worker=worker is not None)
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


def _watch_signals(*, worker: bool = False) -> asyncio.Event:
    """Return an event set by the first SIGTERM/SIGINT; the second one cancels the main task.

    In a worker, the supervisor's death (PARENT_DEATH_SIGNAL, often several at once) drains too,
    and never counts as a second signal.
    """
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

    def on_parent_death() -> None:
        if not stopping.is_set():
            log.warning("supervisor_gone", action="drain")
            stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if worker:
        loop.add_signal_handler(PARENT_DEATH_SIGNAL, on_parent_death)
    return stopping
