"""Helpers for the logs tests: OTLP/HTTP posts and Elasticsearch searches (runs: tests.harness)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from elasticsearch import Elasticsearch

LOGS_INDEX = "logs-*-ingestdtest"


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status, await r.read()


async def search(
    es: Elasticsearch,
    query: dict[str, Any],
    *,
    size: int = 1000,
    index: str = LOGS_INDEX,
    **extra: Any,
) -> Any:
    """Refresh the test data streams (*index*) and search them (in a thread: the pipeline shares
    the loop).

    Acknowledged records are stored already (ack: committed); refresh makes them searchable.
    """

    def run() -> Any:
        es.indices.refresh(index=index)
        return es.search(index=index, query=query, size=size, **extra)

    return await asyncio.to_thread(run)


def sources(result: Any) -> list[dict[str, Any]]:
    return [hit["_source"] for hit in result["hits"]["hits"]]
