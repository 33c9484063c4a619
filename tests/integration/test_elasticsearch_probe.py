"""The Elasticsearch sink's health probe (the prober asks it every admin.check_interval_s)."""

from __future__ import annotations

import asyncio

import pytest
from elasticsearch import ConnectionError as EsConnectionError
from elasticsearch import Elasticsearch

from ingestd.config import ElasticsearchSinkConfig
from ingestd.sinks.elasticsearch import ElasticsearchSink
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration]


async def test_probe_answers_while_started_and_refuses_before_and_after(
    stack: Stack, es: Elasticsearch
) -> None:
    """Started: probes pass, again and again on the same client; before start() and after
    stop() a probe raises instead of reaching the cluster."""
    sink = ElasticsearchSink(ElasticsearchSinkConfig(urls=[stack.es_url]))
    with pytest.raises(RuntimeError, match="before start"):
        await sink.probe()
    async with asyncio.TaskGroup() as tasks:
        await sink.start(tasks)
        try:
            for _ in range(3):
                await sink.probe()
        finally:
            await sink.stop(deadline=0.0)
    with pytest.raises(RuntimeError, match="before start"):
        await sink.probe()


async def test_probe_raises_when_nothing_answers() -> None:
    """A cluster address where nothing listens: the probe raises (the prober marks it down)."""
    sink = ElasticsearchSink(ElasticsearchSinkConfig(urls=["http://127.0.0.1:1"]))
    async with asyncio.TaskGroup() as tasks:
        await sink.start(tasks)
        try:
            with pytest.raises(EsConnectionError):
                await sink.probe()
        finally:
            await sink.stop(deadline=0.0)
