"""One evaluation of one rule, in one transaction: read its data, step every series' state,
write `ingestd.alert_states`, the `alerts` rows and the outbox, then commit.

What can go wrong, one line each:
- the data cannot be read (PostgreSQL or Elasticsearch down, a timeout): the transaction
  rolls back; states, alerts and outbox are as before the evaluation.
- the evaluator dies (kill -9) or loses its connection mid-way: PostgreSQL aborts the
  transaction; nothing of the evaluation is visible; the next leader evaluates again.
- two evaluators at once (a lock handover race, a misconfigured lock key): both lock the
  rule's row in ingestd.alert_rules first; the second then sees the rule evaluated moments
  ago and skips it. Were state ever lost, the partial unique index alerts_rule_open_key still
  refuses a second open row, and the existing one is adopted.
- a person ACKNOWLEDGED the alert: the row keeps that status until the rule resolves it.
- rows without a rule (Deep Eyes' own alerts) match none of these statements.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch

from ingestd.alerts import notify
from ingestd.alerts.config import AlertsConfig, RuleConfig
from ingestd.alerts.queries import read_samples
from ingestd.alerts.rules import Sample, alert_labels, fingerprint, holds, render
from ingestd.alerts.state import SeriesState, Timing, step
from ingestd.schema.db import Connection

# A rule is due when its last evaluation is older than this share of its interval, so that a
# replica whose timer fires slightly early does not skip a turn.
DUE_SHARE = 0.9


@dataclass
class Evaluation:
    """What one evaluation of a rule did (skipped: evaluated moments ago by another)."""

    rule: str
    skipped: bool = False
    series: int = 0
    pending: int = 0
    firing: int = 0
    fired: int = 0
    resolved: int = 0
    ms: int = 0


@dataclass
class _Stored:
    state: SeriesState
    application: str | None
    labels: dict[str, str]
    alert_id: Any


async def evaluate_rule(
    conn: Connection,
    es: AsyncElasticsearch | None,
    config: AlertsConfig,
    rule: RuleConfig,
    *,
    now: datetime | None = None,
    force: bool = False,
) -> Evaluation:
    """Evaluate *rule* once (one transaction). Raises when its data or the database fail;
    then nothing changed. *now* replaces the database clock (tests); *force* ignores the
    schedule."""
    began = time.monotonic()
    result = Evaluation(rule.name)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO ingestd.alert_rules (rule, lastEvaluatedAt, lastOutcome)"
            " VALUES (%s, NULL, 'never') ON CONFLICT (rule) DO NOTHING",
            (rule.name,),
        )
        cur = await conn.execute(
            "SELECT lastEvaluatedAt, clock_timestamp() FROM ingestd.alert_rules"
            " WHERE rule = %s FOR UPDATE",
            (rule.name,),
        )
        row = await cur.fetchone()
        assert row is not None
        last, db_now = row
        now = now or db_now
        interval = config.rule_interval_s(rule)
        if not force and last is not None and (now - last).total_seconds() < interval * DUE_SHARE:
            result.skipped = True
            return result
        stored = await _read_states(conn, rule.name)
        samples = await read_samples(conn, es, rule, now)
        await _apply(conn, config, rule, stored, samples, now, result)
        result.ms = round((time.monotonic() - began) * 1000)
        await conn.execute(
            "UPDATE ingestd.alert_rules SET lastEvaluatedAt = %s, lastOutcome = 'ok',"
            " lastError = NULL, lastMs = %s, series = %s WHERE rule = %s",
            (now, result.ms, result.series, rule.name),
        )
    return result


async def due_rules(conn: Connection, config: AlertsConfig) -> set[str]:
    """The rules whose interval has (almost) passed since their last evaluation, read
    without a transaction; `evaluate_rule` checks again under the rule's row lock."""
    cur = await conn.execute(
        "SELECT rule, extract(epoch FROM clock_timestamp() - lastEvaluatedAt)"
        " FROM ingestd.alert_rules WHERE lastEvaluatedAt IS NOT NULL"
    )
    ago = {rule: float(seconds) for rule, seconds in await cur.fetchall()}
    return {
        rule.name
        for rule in config.rules
        if ago.get(rule.name, math.inf) >= config.rule_interval_s(rule) * DUE_SHARE
    }


async def record_failure(conn: Connection, rule: str, error: str) -> None:
    """Note a failed evaluation (outside its rolled-back transaction), best effort."""
    await conn.execute(
        "UPDATE ingestd.alert_rules SET lastOutcome = 'error', lastError = %s WHERE rule = %s",
        (error[:500], rule),
    )


async def _read_states(conn: Connection, rule: str) -> dict[str, _Stored]:
    cur = await conn.execute(
        "SELECT fingerprint, applicationId, labels, phase, activeSince, lastTrueAt, firingSince,"
        " value, keepFiringSince, alertId FROM ingestd.alert_states WHERE rule = %s FOR UPDATE",
        (rule,),
    )
    out: dict[str, _Stored] = {}
    for row in await cur.fetchall():
        fp, app, labels, phase, active, last_true, firing, value, keep_since, alert_id = row
        state = SeriesState(phase, active, last_true, firing, value, keep_since)
        out[fp] = _Stored(state, app, labels, alert_id)
    return out


async def _apply(
    conn: Connection,
    config: AlertsConfig,
    rule: RuleConfig,
    stored: dict[str, _Stored],
    samples: list[Sample],
    now: datetime,
    result: Evaluation,
) -> None:
    timing = Timing(rule.for_s, rule.keep_firing_for_s, rule.no_data == "keep")
    condition = rule.condition
    seen = {fingerprint(rule.name, s.application, s.series): s for s in samples}
    result.series = len(seen)
    writes = _Writes()
    for fp in seen.keys() | stored.keys():
        sample, before = seen.get(fp), stored.get(fp)
        if sample is None or sample.value is None:
            holding: bool | None = None
            value = None
        else:
            value = sample.value
            holding = holds(value, condition.op, condition.threshold)
        after, transition = step(before.state if before else None, holding, value, now, timing)
        if after is None and before is None:
            continue
        if before is not None:
            app, labels, alert_id = before.application, before.labels, before.alert_id
        else:
            assert sample is not None
            app, labels, alert_id = sample.application, alert_labels(rule, sample), None
        shown = sample or Sample(app, {}, value)
        if transition == "firing":
            result.fired += 1
            alert_id = await _open_alert(conn, rule, app, labels, fp, shown, now)
            # startsAt is when the condition began to hold (Prometheus' ActiveAt).
            assert after is not None
            await _notify(conn, config, rule, fp, "firing", labels, shown, after.active_since, None)
        elif transition == "resolved":
            assert before is not None
            result.resolved += 1
            await _resolve_alert(conn, rule.name, fp, now)
            starts = before.state.active_since
            await _notify(conn, config, rule, fp, "resolved", labels, shown, starts, now)
        writes.add(rule.name, fp, app, labels, after, alert_id, exists=before is not None)
        if after is not None:
            result.pending += after.phase == "pending"
            result.firing += after.phase == "firing"
    await writes.flush(conn)


async def _open_alert(
    conn: Connection,
    rule: RuleConfig,
    app: str | None,
    labels: dict[str, str],
    fp: str,
    sample: Sample,
    now: datetime,
) -> Any:
    if app is not None:
        # Logs-only applications have no row yet (the logs sink writes none); alerts needs one.
        await conn.execute(
            "INSERT INTO applications (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (app,)
        )
    cur = await conn.execute(
        "INSERT INTO alerts (applicationId, name, message, severity, rule, labels, fingerprint,"
        " createdAt, updatedAt) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (rule, applicationId, fingerprint)"
        " WHERE rule IS NOT NULL AND status IN ('ACTIVE', 'ACKNOWLEDGED') DO NOTHING RETURNING id",
        (
            app,
            rule.name,
            render(rule.message, rule, sample),
            rule.severity,
            rule.name,
            orjson.dumps(labels).decode(),
            fp,
            now,
            now,
        ),
    )
    row = await cur.fetchone()
    if row is not None:
        return row[0]
    # Already open (state was lost, or written by an evaluator that raced us): adopt it.
    cur = await conn.execute(
        "SELECT id FROM alerts WHERE rule = %s AND fingerprint = %s"
        " AND status IN ('ACTIVE', 'ACKNOWLEDGED')",
        (rule.name, fp),
    )
    found = await cur.fetchone()
    return found[0] if found else None


async def _resolve_alert(conn: Connection, rule: str, fp: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE alerts SET status = 'RESOLVED', resolvedAt = %s WHERE rule = %s"
        " AND fingerprint = %s AND status IN ('ACTIVE', 'ACKNOWLEDGED')",
        (now, rule, fp),
    )


async def _notify(
    conn: Connection,
    config: AlertsConfig,
    rule: RuleConfig,
    fp: str,
    status: str,
    labels: dict[str, str],
    sample: Sample,
    starts: datetime,
    ends: datetime | None,
) -> None:
    receiver = config.receiver_of(rule)
    if receiver is None:
        return
    annotations = {k: render(v, rule, sample) for k, v in rule.annotations.items()}
    annotations.setdefault("message", render(rule.message, rule, sample))
    if sample.value is not None:
        annotations.setdefault("value", f"{sample.value:g}")
    event = notify.AlertEvent(rule.name, fp, status, labels, annotations, starts, ends)
    await notify.enqueue(conn, config, receiver, event)


@dataclass
class _Writes:
    """State rows to write at the end of an evaluation, in three batches (executemany sends
    each batch in one pipeline instead of a round trip per series)."""

    deletes: list[tuple[str, str]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    inserts: list[tuple[Any, ...]] = field(default_factory=list)

    def add(
        self,
        rule: str,
        fp: str,
        app: str | None,
        labels: dict[str, str],
        state: SeriesState | None,
        alert_id: Any,
        *,
        exists: bool,
    ) -> None:
        if state is None:
            self.deletes.append((rule, fp))
            return
        values = (
            app,
            orjson.dumps(labels).decode(),
            state.phase,
            state.active_since,
            state.last_true_at,
            state.firing_since,
            state.value,
            state.keep_firing_since,
            alert_id,
            rule,
            fp,
        )
        (self.updates if exists else self.inserts).append(values)

    async def flush(self, conn: Connection) -> None:
        async with conn.cursor() as cur:
            if self.deletes:
                await cur.executemany(
                    "DELETE FROM ingestd.alert_states WHERE rule = %s AND fingerprint = %s",
                    self.deletes,
                )
            if self.updates:
                await cur.executemany(
                    "UPDATE ingestd.alert_states SET applicationId = %s, labels = %s, phase = %s,"
                    " activeSince = %s, lastTrueAt = %s, firingSince = %s, value = %s,"
                    " keepFiringSince = %s, alertId = %s WHERE rule = %s AND fingerprint = %s",
                    self.updates,
                )
            if self.inserts:
                await cur.executemany(
                    "INSERT INTO ingestd.alert_states (applicationId, labels, phase, activeSince,"
                    " lastTrueAt, firingSince, value, keepFiringSince, alertId, rule, fingerprint)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    self.inserts,
                )


async def firing_count(conn: Connection) -> int:
    cur = await conn.execute("SELECT count(*) FROM ingestd.alert_states WHERE phase = 'firing'")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
