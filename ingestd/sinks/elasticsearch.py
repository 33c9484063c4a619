"""The Elasticsearch sink: an async client to the cluster that holds the logs data streams."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from elasticsearch import AsyncElasticsearch

from ingestd.config import ElasticsearchSinkConfig

log = structlog.get_logger("ingestd.sinks.elasticsearch")


def make_client(config: ElasticsearchSinkConfig) -> AsyncElasticsearch:
    """One place that turns the config section into a client (used by the sink and `schema`)."""
    auth: dict[str, Any] = {}
    if config.api_key:
        auth["api_key"] = config.api_key
    elif config.username:
        auth["basic_auth"] = (config.username, config.password or "")
    return AsyncElasticsearch(
        config.urls,
        request_timeout=config.request_timeout_s,
        http_compress=config.gzip,
        retry_on_timeout=False,
        max_retries=0,
        **auth,
    )


class ElasticsearchSink:
    name = "elasticsearch"

    def __init__(self, config: ElasticsearchSinkConfig) -> None:
        self.config = config
        self._client: AsyncElasticsearch | None = None

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            raise RuntimeError("ElasticsearchSink used before start()")
        return self._client

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        self._client = make_client(self.config)

    async def stop(self, deadline: float) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def probe(self) -> None:
        """Return when the cluster answers with a green or yellow health; raise otherwise."""
        health = await self.client.options(request_timeout=2.0).cluster.health()
        if health["status"] == "red":
            raise RuntimeError("cluster health is red")
