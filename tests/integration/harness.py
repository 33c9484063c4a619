"""Run ingestd's real pipeline in the test's event loop, built by the daemon from a config."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from ingestd import config
from ingestd.daemon import Daemon, build
from ingestd.pipeline import deadline_in
from ingestd.receiver.otlp_grpc import OtlpGrpcReceiver


def config_text(dsn: str, **overrides: Any) -> str:
    """A config for tests: gRPC on a free port, only TimescaleDB, fast flushes.

    *overrides* are sections merged key by key into the defaults
    (`ingest={"ack": "accepted"}` changes only ingest.ack).
    """
    base: dict[str, Any] = {
        "receivers": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"enabled": False}},
        "redis": {"enabled": False},
        "ingest": {"ack_timeout_s": 20},
        "sinks": {
            "elasticsearch": {"enabled": False},
            "timescale": {
                "dsn": dsn,
                "batch": {"flush_interval_s": 0.05},
                "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "max_elapsed_s": 30},
            },
        },
    }
    return yaml.safe_dump(_merge(base, overrides))


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Running:
    daemon: Daemon
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def status(self, table: str) -> dict[str, Any]:
        """The /status entry of *table*'s batcher (its writer's counters included)."""
        return self.daemon.pipeline.status_sources()[f"batcher.{table}"]()


@contextlib.asynccontextmanager
async def running(text: str) -> AsyncIterator[Running]:
    """Start the daemon's pipeline from config *text*; stop it (drain) on exit."""
    daemon = build(config.parse(text))
    async with asyncio.TaskGroup() as tasks:
        await daemon.pipeline.start(tasks)
        try:
            receiver = daemon.stages["receiver.grpc"]
            assert isinstance(receiver, OtlpGrpcReceiver)
            assert receiver.port is not None
            yield Running(daemon, receiver.port)
        finally:
            await daemon.pipeline.stop(deadline_in(10.0))


@contextlib.asynccontextmanager
async def stubs(target: str) -> AsyncIterator[tuple[Any, Any]]:
    """(TraceServiceStub, MetricsServiceStub) on one channel to *target*."""
    async with grpc.aio.insecure_channel(target) as channel:
        yield (
            trace_service_pb2_grpc.TraceServiceStub(channel),
            metrics_service_pb2_grpc.MetricsServiceStub(channel),
        )


def retry_delay_s(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay carried by a failed call's status details, if any."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement in its own connection; its rows (none for a command)."""
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []
