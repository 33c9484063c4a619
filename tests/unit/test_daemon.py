"""The daemon's wiring: which stages exist, in which order, with which routes."""

from __future__ import annotations

from ingestd import config
from ingestd.daemon import build
from ingestd.model import Signal
from ingestd.receiver.otlp_grpc import OtlpGrpcReceiver
from ingestd.sinks.discard import DiscardWriter


def test_stages_start_downstream_first() -> None:
    """Memory guard and process sampler, sinks, shared state, the prober, one batcher per
    table, the receivers last."""
    daemon = build(
        config.parse("redis: {enabled: false}\nsinks: {elasticsearch: {enabled: false}}")
    )
    names = [stage.name for stage in daemon.pipeline.stages]
    assert names == [
        "memory",
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
    receiver = daemon.stages["receiver.grpc"]
    assert isinstance(receiver, OtlpGrpcReceiver)
    assert receiver._ingest is daemon.ingest
    assert all(daemon.ingest.accepts(s) for s in (Signal.TRACES, Signal.METRICS, Signal.LOGS))
    no_es = build(config.parse("redis: {enabled: false}\nsinks: {elasticsearch: {enabled: false}}"))
    assert not no_es.ingest.accepts(Signal.LOGS)
    assert no_es.ingest.accepts(Signal.TRACES)


def test_accepted_mode_retries_until_stopped() -> None:
    """ack: accepted makes every batcher retry until shutdown instead of giving up."""
    daemon = build(config.parse("ingest: {ack: accepted}\nredis: {enabled: false}"))
    receiver = daemon.stages["receiver.grpc"]
    assert isinstance(receiver, OtlpGrpcReceiver)
    assert all(r.batcher._retry_until_stopped for r in receiver._ingest.routes.values())


def test_batcher_status_is_published() -> None:
    """/status shows each batcher with its writer's counters."""
    daemon = build(config.parse("redis: {enabled: false}"))
    status = daemon.admin._status_sources["batcher.traces"]()
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
    for signal in (Signal.TRACES, Signal.METRICS, Signal.LOGS):
        assert isinstance(daemon.ingest.routes[signal].batcher._writer, DiscardWriter)
    assert daemon.admin._status_sources["batcher.traces"]()["discarded_items"] == 0
