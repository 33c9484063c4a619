"""The daemon's wiring: which stages exist, in which order, with which routes."""

from __future__ import annotations

from ingestd import config
from ingestd.daemon import build
from ingestd.ingest import Signal
from ingestd.receiver.otlp_grpc import OtlpGrpcReceiver


def test_stages_start_downstream_first() -> None:
    """Sinks (and their maintenance), the prober, one batcher per table, the receiver last."""
    daemon = build(
        config.parse("redis: {enabled: false}\nsinks: {elasticsearch: {enabled: false}}")
    )
    names = [stage.name for stage in daemon.pipeline.stages]
    assert names == [
        "timescale",
        "maintenance",
        "prober",
        "batcher.traces",
        "batcher.metrics",
        "receiver.grpc",
    ]


def test_traces_and_metrics_are_routed_and_logs_are_not() -> None:
    """The receiver's Ingest accepts traces and metrics; logs have no route yet."""
    daemon = build(config.parse("redis: {enabled: false}"))
    receiver = daemon.stages["receiver.grpc"]
    assert isinstance(receiver, OtlpGrpcReceiver)
    ingest = receiver._ingest
    assert ingest.accepts(Signal.TRACES)
    assert ingest.accepts(Signal.METRICS)
    assert not ingest.accepts(Signal.LOGS)


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
