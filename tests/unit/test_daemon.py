"""The daemon's wiring: which stages exist, in which order, with which routes."""

from __future__ import annotations

import asyncio

import aiohttp

from ingestd import config
from ingestd.daemon import build
from ingestd.errors import StageClosed
from ingestd.model import Signal
from ingestd.pipeline import deadline_in
from ingestd.receiver.otlp_grpc import OtlpGrpcReceiver
from ingestd.receiver.otlp_http import OtlpHttpReceiver


def test_stages_start_downstream_first() -> None:
    """Memory guard, codec choice and process sampler, sinks, shared state, the prober, one
    batcher per table, the receivers last."""
    daemon = build(
        config.parse("redis: {enabled: false}\nsinks: {elasticsearch: {enabled: false}}")
    )
    names = [stage.name for stage in daemon.pipeline.stages]
    assert names == [
        "memory",
        "codec",
        "process",
        "timescale",
        "maintenance",
        "dedup",
        "pressure",
        "reload",
        "prober",
        "batcher.traces",
        "batcher.metrics",
        "receiver.grpc",
        "receiver.http",
    ]


def test_each_signal_is_routed_to_its_enabled_sink() -> None:
    """Traces and metrics go to TimescaleDB, logs to Elasticsearch; a disabled sink, no route."""
    daemon = build(config.parse("redis: {enabled: false}"))
    assert all(daemon.ingest.accepts(s) for s in (Signal.TRACES, Signal.METRICS, Signal.LOGS))
    no_es = build(config.parse("redis: {enabled: false}\nsinks: {elasticsearch: {enabled: false}}"))
    assert not no_es.ingest.accepts(Signal.LOGS)
    assert no_es.ingest.accepts(Signal.TRACES)


def test_accepted_mode_retries_until_stopped() -> None:
    """ack: accepted makes every batcher retry until shutdown instead of giving up."""
    daemon = build(config.parse("ingest: {ack: accepted}\nredis: {enabled: false}"))
    assert all(route.batcher.retry_until_stopped for route in daemon.ingest.routes.values())


def test_batcher_status_is_published() -> None:
    """/status shows each batcher with its writer's counters."""
    daemon = build(config.parse("redis: {enabled: false}"))
    status = daemon.pipeline.status_sources()["batcher.traces"]()
    assert status["held_items"] == 0
    assert status["duplicate_parts"] == 0


def test_discarding_sinks_replace_the_writers_and_open_no_connection() -> None:
    """discard: true routes every signal to a DiscardWriter and builds no sink stage."""
    daemon = build(
        config.parse(
            "redis: {enabled: false}\n"
            "sinks: {timescale: {discard: true}, elasticsearch: {discard: true}}"
        )
    )
    names = [stage.name for stage in daemon.pipeline.stages]
    assert not {"timescale", "elasticsearch", "maintenance", "logs_retention"} & set(names)
    status = daemon.pipeline.status_sources()
    for name in ("batcher.traces", "batcher.metrics", "batcher.logs"):
        assert status[name]()["discarded_items"] == 0


async def test_receivers_answer_through_the_daemons_ingest() -> None:
    """Both receivers refuse new requests once the daemon's ingest drains: they share it."""
    daemon = build(
        config.parse(
            "redis: {enabled: false}\n"
            "receivers: {grpc: {endpoint: '127.0.0.1:0'}, http: {endpoint: '127.0.0.1:0'}}"
        )
    )
    grpc_receiver, http_receiver = daemon.stages["receiver.grpc"], daemon.stages["receiver.http"]
    assert isinstance(grpc_receiver, OtlpGrpcReceiver)
    assert isinstance(http_receiver, OtlpHttpReceiver)
    assert grpc_receiver.admission_error() is None
    daemon.ingest.draining = True
    assert isinstance(grpc_receiver.admission_error(), StageClosed)
    async with asyncio.TaskGroup() as tasks:
        await http_receiver.start(tasks)
        try:
            url = f"http://127.0.0.1:{http_receiver.port}/v1/traces"
            headers = {"Content-Type": "application/x-protobuf"}
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=b"", headers=headers) as reply,
            ):
                assert reply.status == 503
        finally:
            await http_receiver.stop(deadline_in(2.0))


def test_status_and_probes_come_from_the_registration() -> None:
    """/status lists every stage with a status once; the prober probes each stage with a probe,
    Redis as optional."""
    daemon = build(config.parse(""))
    names = [stage.name for stage in daemon.pipeline.stages]
    assert len(names) == len(set(names))
    sources = daemon.pipeline.status_sources()
    assert {"memory", "process", "timescale", "redis", "pressure", "batcher.logs"} <= set(sources)
    assert "logs_routing" in sources
    assert list(sources) == [n for n in names if n in sources]
    probes = {p.component: p.required for p in daemon.pipeline.probes()}
    assert probes == {"timescale": True, "elasticsearch": True, "redis": False}
    # Plus `memory`, which the memory guard reports itself (unready after long shedding).
    assert set(daemon.health.status()["components"]) == {*probes, "memory"}
