"""The stage that enforces logs retention where Elasticsearch does not (no lifecycle module).

Every `maintenance.interval_s` it calls `enforce_retention`: roll over write indices older than
the rollover age, delete backing indices past `retention_days`. Where the server runs the data
stream lifecycle itself this is a cheap no-op. Several replicas doing it at once is harmless:
a rollover needs a non-empty write index of age, and deleting a deleted index is skipped.
"""

from __future__ import annotations

import asyncio

import structlog

from ingestd.config import ElasticsearchSinkConfig, MaintenanceConfig
from ingestd.observe.metrics import (
    MAINTENANCE_ERRORS,
    MAINTENANCE_ES_DELETED,
    MAINTENANCE_ES_ROLLED,
)
from ingestd.schema.elasticsearch import enforce_retention
from ingestd.sinks.elasticsearch import ElasticsearchSink

log = structlog.get_logger("ingestd.jobs.logs_retention")


class LogsRetention:
    name = "logs_retention"

    def __init__(
        self,
        sink: ElasticsearchSink,
        config: ElasticsearchSinkConfig,
        maintenance: MaintenanceConfig,
        *,
        first_delay_s: float = 10.0,
    ) -> None:
        self._sink = sink
        self._config = config
        self._interval_s = maintenance.interval_s
        self._first_delay_s = min(first_delay_s, maintenance.interval_s)
        self._task: asyncio.Task[None] | None = None
        self.last: dict[str, object] = {}

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Spawn the schedule loop; the first run comes shortly after startup."""
        self._task = tasks.create_task(self._loop(), name=self.name)

    async def stop(self, deadline: float) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    def status(self) -> dict[str, object]:
        return dict(self.last)

    async def _loop(self) -> None:
        await asyncio.sleep(self._first_delay_s)
        while True:
            await self.run_once()
            await asyncio.sleep(self._interval_s)

    async def run_once(self) -> None:
        """One pass; a failure is logged and counted, never raised."""
        try:
            result = await enforce_retention(self._config, self._sink.client)
        except Exception as exc:  # noqa: BLE001 - ES down or refusing: try again next interval
            MAINTENANCE_ERRORS.labels(step="elasticsearch_retention").inc()
            log.warning("es_retention_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            self.last = {"error": str(exc)[:300]}
            return
        MAINTENANCE_ES_ROLLED.inc(len(result.get("rolled_over", ())))
        MAINTENANCE_ES_DELETED.inc(len(result.get("deleted", ())))
        self.last = result
