"""Helpers for the logs tests: an in-process ingestd pipeline and OTLP clients against it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from elasticsearch import Elasticsearch

from ingestd.config import Config, parse
from ingestd.daemon import Daemon, build
from ingestd.pipeline import deadline_in
from ingestd.receiver.otlp_http import OtlpHttpReceiver

LOGS_INDEX = "logs-*-ingestdtest"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def logs_config(es_url: str, namespace: str, *, grpc: bool = False, extra: str = "") -> Config:
    """ingestd with only the logs path: Elasticsearch on, TimescaleDB and Redis off."""
    return parse(
        f"""
receivers:
  grpc: {{enabled: {str(grpc).lower()}, endpoint: "127.0.0.1:{free_port()}"}}
  http: {{endpoint: "127.0.0.1:{free_port()}"}}
ingest: {{ack_timeout_s: 20}}
sinks:
  timescale: {{enabled: false}}
  elasticsearch:
    urls: ["{es_url}"]
    logs_namespace: {namespace}
    batch: {{flush_interval_s: 0.05}}
    retry: {{initial_backoff_s: 0.2, max_backoff_s: 2, max_elapsed_s: 90}}
redis: {{enabled: false}}
{extra}
"""
    )


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Daemon]:
    """The daemon's pipeline (no admin server, no signal handlers), stopped on exit."""
    daemon = build(config)
    async with asyncio.TaskGroup() as tasks:
        await daemon.pipeline.start(tasks)
        try:
            yield daemon
        finally:
            await daemon.pipeline.stop(deadline_in(15))


def http_url(daemon: Daemon, path: str = "/v1/logs") -> str:
    receiver = daemon.stages["receiver.http"]
    assert isinstance(receiver, OtlpHttpReceiver)
    return f"http://127.0.0.1:{receiver.port}{path}"


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status, await r.read()


async def search(
    es: Elasticsearch, query: dict[str, Any], *, size: int = 1000, **extra: Any
) -> Any:
    """Refresh the test data streams and search them (in a thread: the pipeline shares the loop).

    Acknowledged records are stored already (ack: committed); refresh makes them searchable.
    """

    def run() -> Any:
        es.indices.refresh(index=LOGS_INDEX)
        return es.search(index=LOGS_INDEX, query=query, size=size, **extra)

    return await asyncio.to_thread(run)


def sources(result: Any) -> list[dict[str, Any]]:
    return [hit["_source"] for hit in result["hits"]["hits"]]
