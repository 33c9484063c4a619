"""The maintenance stage: runs `maintain_once` on a schedule inside the daemon.

Every replica runs this stage; the advisory lock and the "recent run" check inside each run
make one of them act per interval (see `ingestd.schema.maintenance`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from ingestd.config import MaintenanceConfig
from ingestd.observe import metrics
from ingestd.pipeline import remaining
from ingestd.retry import SYSTEM_CLOCK, Clock
from ingestd.schema.maintenance import MaintenanceReport, maintain_once

log = structlog.get_logger("ingestd.jobs.maintenance")


class MaintenanceJob:
    """The stage that runs `maintain_once` every `maintenance.interval_s` in the daemon.

    Every replica runs this stage; the advisory lock and the "recent run" check make one of
    them act per interval. A failed run is logged and counted; the loop goes on.
    """

    name = "maintenance"
    # Each step commits on its own, so cutting a run short loses nothing; this only saves
    # the run from being recorded as abandoned when it is about to finish anyway.
    STOP_GRACE_S = 2.0

    def __init__(
        self,
        dsn: str,
        config: MaintenanceConfig,
        *,
        run: Callable[[], Awaitable[MaintenanceReport]] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        first_delay_s: float = 5.0,
    ) -> None:
        self.config = config
        self._run = run or (lambda: maintain_once(dsn, config, trigger="schedule"))
        self._clock = clock
        # Runs start a little after the pipeline, not in the middle of its startup.
        self._first_delay_s = min(first_delay_s, config.interval_s)
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._stopping = False
        self.last: MaintenanceReport | None = None

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Spawn the schedule loop; returns at once (the first run comes after a short delay)."""
        self._task = tasks.create_task(self._loop(), name="maintenance")

    async def stop(self, deadline: float) -> None:
        """End the loop. A run in progress gets up to STOP_GRACE_S to finish (then it is
        cancelled: its connection and lock close, and the next run marks it abandoned)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if self._running:
            await asyncio.wait({task}, timeout=min(self.STOP_GRACE_S, remaining(deadline)))
        task.cancel()
        await asyncio.wait({task}, timeout=remaining(deadline))

    def status(self) -> dict[str, Any]:
        """For /status: the last run's outcome."""
        if self.last is None:
            return {"last_run": None}
        return {"acted": self.last.acted, "skipped": self.last.skipped, **self.last.summary()}

    async def _loop(self) -> None:
        await self._clock.sleep(self._first_delay_s)
        while not self._stopping:
            self._running = True
            try:
                await self.run_once()
            finally:
                self._running = False
            await self._clock.sleep(self.config.interval_s)

    async def run_once(self) -> None:
        """One scheduled run, logged; never raises (except cancellation)."""
        try:
            report = await self._run()
        except Exception as exc:  # noqa: BLE001 - the schedule must survive any failed run
            metrics.MAINTENANCE_RUNS.labels(outcome="error").inc()
            metrics.MAINTENANCE_ERRORS.labels(step="run").inc()
            log.error("maintenance_failed", error=f"{type(exc).__name__}: {exc}"[:500])
            return
        self.last = report
        if report.acted:
            level = log.info if report.ok else log.warning
            level("maintenance_run", **report.summary())
        else:
            log.debug("maintenance_skipped", reason=report.skipped)
