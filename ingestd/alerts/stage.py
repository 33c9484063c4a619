"""The alerts stage: every replica ticks; the one holding the advisory lock evaluates the due
rules and delivers the due notifications.

Each pass opens its own connection and takes `pg_try_advisory_lock(alerts.lock_key)` on it
(the maintenance job's scheme): if the process or the connection dies, the lock goes with it
and another replica takes over at its next tick. The schedule lives in ingestd.alert_rules,
so a new leader keeps it. The rules are replaced on reload (`update`), between passes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psycopg
import structlog
from elasticsearch import AsyncElasticsearch

from ingestd.alerts import notify, store
from ingestd.alerts.config import AlertsConfig
from ingestd.config import Config, ElasticsearchSinkConfig
from ingestd.observe import metrics
from ingestd.pipeline import cancel_and_wait
from ingestd.retry import SYSTEM_CLOCK, Clock
from ingestd.schema.db import Connection, connect
from ingestd.sinks.elasticsearch import make_client

log = structlog.get_logger("ingestd.alerts")
# Firing alerts are re-sent to Alertmanager receivers this often: Prometheus' default
# resend delay, well inside Alertmanager's resolve_timeout (5 m by default).
ALERTMANAGER_REFRESH_S = 60.0


@dataclass
class Pass:
    """One tick: skipped (locked | no_schema) or the rules evaluated and notifications sent."""

    skipped: str | None = None
    evaluations: list[store.Evaluation] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    delivery: notify.Delivery = field(default_factory=notify.Delivery)
    firing: int = 0
    ms: int = 0


class AlertsJob:
    """The stage evaluating `alerts.rules`; see the module docstring."""

    name = "alerts"

    def __init__(
        self,
        dsn: str,
        config: AlertsConfig,
        es_config: ElasticsearchSinkConfig | None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self._dsn = dsn
        self._es_config = es_config
        self._clock = clock
        self._es: AsyncElasticsearch | None = None
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.last: Pass | None = None
        self._refreshed = -ALERTMANAGER_REFRESH_S

    def update(self, config: AlertsConfig) -> list[str]:
        """Take a reloaded `alerts` section (rules, receivers) from the next pass on."""
        if config == self.config:
            return []
        before = {r.name for r in self.config.rules}
        after = {r.name for r in config.rules}
        self.config = config
        return [
            f"alerts.rules: {len(after)} rule(s), added {sorted(after - before)},"
            f" removed {sorted(before - after)}"
        ]

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Open the HTTP session (and Elasticsearch client) and spawn the tick loop."""
        if self._es_config is not None:
            self._es = make_client(self._es_config)
        self._http = aiohttp.ClientSession()
        self._task = tasks.create_task(self._loop(), name="alerts")

    async def stop(self, deadline: float) -> None:
        """Cancel the loop (an evaluation in progress rolls back) and close the clients."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._es is not None:
            await self._es.close()
            self._es = None

    def reloaded(self, config: Config) -> list[str]:
        """The reload listener (`ingestd.reload`): takes the new file's `alerts` section."""
        return self.update(config.alerts)

    def status(self) -> dict[str, Any]:
        """For /status: the last pass."""
        last = self.last
        if last is None:
            return {"last_pass": None, "rules": len(self.config.rules)}
        return {
            "rules": len(self.config.rules),
            "skipped": last.skipped,
            "evaluated": [e.rule for e in last.evaluations if not e.skipped],
            "errors": last.errors,
            "firing": last.firing,
            "notifications_sent": last.delivery.sent,
            "notifications_failed": last.delivery.failed,
            "ms": last.ms,
        }

    async def _loop(self) -> None:
        while True:
            try:
                self.last = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the schedule must survive any failed pass
                metrics.ALERTS_EVALUATION_FAILURES.labels(source=_source(exc)).inc()
                log.error("alerts_pass_failed", error=f"{type(exc).__name__}: {exc}"[:500])
            await self._clock.sleep(self.config.tick_s)

    async def run_once(self, *, force: bool = False) -> Pass:
        """One tick. Raises only when the database cannot be reached at all."""
        began = time.monotonic()
        config = self.config
        conn = await evaluator_connection(self._dsn, config)
        try:
            result = await self._locked(conn, config, force)
        finally:
            await conn.close()
        result.ms = round((time.monotonic() - began) * 1000)
        return result

    async def _locked(self, conn: Connection, config: AlertsConfig, force: bool) -> Pass:
        cur = await conn.execute("SELECT to_regclass('ingestd.alert_states') IS NOT NULL")
        row = await cur.fetchone()
        if not (row and row[0]):
            return Pass(skipped="no_schema")
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (config.lock_key,))
        row = await cur.fetchone()
        if not (row and row[0]):
            return Pass(skipped="locked")
        try:
            return await self._evaluate_all(conn, config, force)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (config.lock_key,))

    async def _evaluate_all(self, conn: Connection, config: AlertsConfig, force: bool) -> Pass:
        result = Pass()
        due = await store.due_rules(conn, config) if not force else None
        for rule in config.rules:
            if due is not None and rule.name not in due:
                continue
            began = time.monotonic()
            try:
                done = await store.evaluate_rule(conn, self._es, config, rule, force=force)
            except Exception as exc:
                if isinstance(exc, psycopg.OperationalError) and conn.closed:
                    raise
                source = _source(exc)
                metrics.ALERTS_EVALUATIONS.labels(outcome="error").inc()
                metrics.ALERTS_EVALUATION_FAILURES.labels(source=source).inc()
                message = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                result.errors[rule.name] = message
                log.error("alert_evaluation_failed", rule=rule.name, source=source, error=message)
                if not conn.closed:
                    await store.record_failure(conn, rule.name, message)
                continue
            result.evaluations.append(done)
            if done.skipped:
                continue
            metrics.ALERTS_EVALUATIONS.labels(outcome="ok").inc()
            metrics.ALERTS_EVALUATION_SECONDS.observe(time.monotonic() - began)
            metrics.ALERTS_TRANSITIONS.labels(transition="firing").inc(done.fired)
            metrics.ALERTS_TRANSITIONS.labels(transition="resolved").inc(done.resolved)
            if done.fired or done.resolved:
                log.info(
                    "alert_rule_evaluated",
                    rule=rule.name,
                    series=done.series,
                    fired=done.fired,
                    resolved=done.resolved,
                    firing=done.firing,
                    ms=done.ms,
                )
        result.firing = await store.firing_count(conn)
        metrics.ALERTS_FIRING.set(result.firing)
        if self._http is not None:
            result.delivery = await notify.deliver_due(conn, config, self._http)
            await notify.prune_delivered(conn, config)
            if self._clock.now() - self._refreshed >= ALERTMANAGER_REFRESH_S:
                self._refreshed = self._clock.now()
                await notify.refresh_alertmanagers(conn, config, self._http)
        return result


async def evaluator_connection(dsn: str, config: AlertsConfig) -> Connection:
    """The evaluator's connection: autocommit, UTC, bounded statements, no JIT (compiling
    a rule's plan took ~100 ms of its ~350 ms at 100 applications, docs/alerts.md)."""
    conn = await connect(dsn, purpose="alerts", statement_timeout_s=config.statement_timeout_s)
    await conn.execute("SET jit = off")
    return conn


def _source(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error | OSError):
        return "postgres"
    module = type(exc).__module__
    return "elasticsearch" if module.startswith(("elasticsearch", "elastic_transport")) else "other"
