"""Alert rules on the real stack: metrics, spans and logs rules, the alerts table, the outbox.

Time is the evaluation's `now` (injected), data is written relative to it, so `for` and
windows are exercised without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch, Elasticsearch

from ingestd.alerts import notify, store
from ingestd.alerts.config import AlertsConfig
from ingestd.alerts.stage import AlertsJob
from ingestd.config import ElasticsearchSinkConfig, MaintenanceConfig
from ingestd.schema import maintenance
from ingestd.schema.db import connect
from ingestd.schema.elasticsearch import apply_templates
from tests.harness import config_text, free_port, running, stubs
from tests.integration.alerts_support import (
    alerts,
    alerts_config,
    evaluate,
    insert_metrics,
    insert_spans,
    query,
)
from tests.integration.conftest import Stack, TierDatabase, unavailable
from tests.integration.schema_support import apply, make_config
from tests.proxy import Proxy
from tests.samples import metric_request

pytestmark = pytest.mark.integration

S = timedelta(seconds=1)
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)

CPU_RULE = {
    "name": "HighCpu",
    "severity": "HIGH",
    "message": "{application} cpu {value:.2f} > {threshold}",
    "labels": {"team": "core"},
    "metric": {"name": "cpu", "aggregate": "avg", "window_s": 60, "op": ">", "threshold": 0.8},
    "for_s": 120,
    "receiver": "hook",
}
HOOK = [{"name": "hook", "url": "http://127.0.0.1:9/hook"}]


@pytest.fixture
async def tier_db(tier_database: TierDatabase) -> str:
    """A fresh database of each schema tier (apache, postgres), schema applied."""
    await apply(make_config(tier_database))
    return tier_database.dsn


def cpu_points(app: str, start: datetime, end: datetime, value: float) -> list[dict[str, Any]]:
    """One cpu point per 10 s in [start, end]."""
    out = []
    t = start
    while t <= end:
        out.append({"timestamp": t, "app": app, "name": "cpu", "value": value})
        t += 10 * S
    return out


async def test_metric_over_threshold_fires_after_for_and_resolves_after_it_drops(
    tier_db: str,
) -> None:
    """Pending for `for_s`, then one ACTIVE row; ACKNOWLEDGED kept; RESOLVED once it drops
    (on each schema tier)."""
    timescale_db = tier_db
    config = alerts_config([CPU_RULE], receivers=HOOK)
    query(
        timescale_db,
        "INSERT INTO alerts (name, message, severity) VALUES ('DeepEyes', 'own', 'LOW')",
    )
    insert_metrics(timescale_db, cpu_points("api", T0 - 60 * S, T0 + 150 * S, 0.9))
    insert_metrics(timescale_db, cpu_points("web", T0 - 60 * S, T0 + 300 * S, 0.1))

    (first,) = await evaluate(timescale_db, config, T0)
    assert (first.series, first.pending, first.fired) == (2, 1, 0)
    await evaluate(timescale_db, config, T0 + 60 * S)
    assert [a["rule"] for a in alerts(timescale_db)] == [None]  # only Deep Eyes' own row

    (fired,) = await evaluate(timescale_db, config, T0 + 120 * S)
    assert fired.fired == 1
    rows = alerts(timescale_db)
    ours = [a for a in rows if a["rule"] == "HighCpu"]
    assert len(ours) == 1
    alert = ours[0]
    assert alert["applicationid"] == "api"
    assert alert["status"] == "ACTIVE"
    assert alert["severity"] == "HIGH"
    assert alert["message"] == "api cpu 0.90 > 0.8"
    assert alert["labels"]["team"] == "core"
    assert alert["labels"]["alertname"] == "HighCpu"

    query(timescale_db, "UPDATE alerts SET status = 'ACKNOWLEDGED' WHERE rule = 'HighCpu'")
    (again,) = await evaluate(timescale_db, config, T0 + 150 * S)
    assert (again.fired, again.firing) == (0, 1)
    assert [a["status"] for a in alerts(timescale_db) if a["rule"]] == ["ACKNOWLEDGED"]

    insert_metrics(timescale_db, cpu_points("api", T0 + 160 * S, T0 + 300 * S, 0.2))
    (resolved,) = await evaluate(timescale_db, config, T0 + 240 * S)
    assert resolved.resolved == 1
    rows = sorted(alerts(timescale_db), key=lambda a: a["rule"] or "")
    # Deep Eyes' own row (no rule) is untouched.
    assert [(a["rule"], a["status"]) for a in rows] == [(None, "ACTIVE"), ("HighCpu", "RESOLVED")]
    assert rows[1]["resolvedat"] == T0 + 240 * S
    outbox = query(
        timescale_db,
        "SELECT idempotencyKey, payload->>'status' FROM ingestd.alert_outbox ORDER BY id",
    )
    assert [status for _, status in outbox] == ["firing", "resolved"]
    # startsAt (and so the key) is when the condition began to hold, as Prometheus' ActiveAt.
    assert outbox[0][0].endswith(f":firing:{int(T0.timestamp())}")
    assert query(timescale_db, "SELECT count(*) FROM ingestd.alert_states") == [(0,)]


async def test_pending_for_survives_a_restart_and_a_new_leader(timescale_db: str) -> None:
    """The pending state is in the database: a fresh evaluator fires at the original time."""
    config = alerts_config([{**CPU_RULE, "receiver": None}])
    insert_metrics(timescale_db, cpu_points("api", T0 - 60 * S, T0 + 150 * S, 0.9))
    await evaluate(timescale_db, config, T0)
    # A new process (fresh connection, nothing in memory) goes on from the stored state.
    (later,) = await evaluate(timescale_db, config, T0 + 119 * S)
    assert (later.pending, later.fired) == (1, 0)
    (fired,) = await evaluate(timescale_db, config, T0 + 120 * S)
    assert fired.fired == 1
    (again,) = await evaluate(timescale_db, config, T0 + 130 * S)
    assert again.fired == 0
    assert len([a for a in alerts(timescale_db) if a["rule"]]) == 1


async def test_error_ratio_and_latency_quantile_rules_on_spans(timescale_db: str) -> None:
    """Error ratio of server spans fires for the failing app; p90 latency for the slow one."""
    spans = []
    for i in range(10):
        t = T0 - (i + 1) * 5 * S
        spans.append((t, "failing", "GET /pay", 2, 2 if i < 3 else 1, 1_000_000))
        spans.append((t, "slow", "GET /pay", 2, 1, 900_000_000))
        # Client spans of the failing app are all errors but not of the rule's kind.
        spans.append((t, "slow", "GET /other", 3, 2, 1_000_000))
    insert_spans(timescale_db, spans)
    config = alerts_config(
        [
            {
                "name": "Errors",
                "severity": "CRITICAL",
                "message": "{application}: {value:.0%} errors",
                "traces": {
                    "measure": "error_ratio",
                    "span_kind": "server",
                    "window_s": 300,
                    "threshold": 0.2,
                },
            },
            {
                "name": "SlowPay",
                "severity": "MEDIUM",
                "message": "{application}: p90 {value:.0f} ms",
                "traces": {
                    "measure": "latency_quantile",
                    "quantile": 0.9,
                    "span_name": "GET /pay",
                    "window_s": 300,
                    "threshold": 500,
                },
            },
        ]
    )
    errors, slow = await evaluate(timescale_db, config, T0)
    assert (errors.series, errors.fired, slow.series, slow.fired) == (2, 1, 2, 1)
    found = {(a["rule"], a["applicationid"]): a for a in alerts(timescale_db)}
    assert set(found) == {("Errors", "failing"), ("SlowPay", "slow")}
    assert found["Errors", "failing"]["message"] == "failing: 30% errors"
    assert found["Errors", "failing"]["labels"]["span_kind"] == "server"
    assert found["SlowPay", "slow"]["message"] == "slow: p90 900 ms"
    assert found["SlowPay", "slow"]["severity"] == "MEDIUM"


def _log_docs(app: str, now: datetime) -> list[dict[str, Any]]:
    docs = []
    for i in range(10):
        severity, text = [
            (17, "payment failed for order"),
            (17, "payment failed: card declined"),
            (17, "payment failed again"),
            (17, "disk almost full"),
            (9, "payment failed but retried"),
        ][i % 5]
        stamp = (now - (i + 1) * 10 * S).isoformat().replace("+00:00", "Z")
        docs.append(
            {
                "@timestamp": stamp,
                "application_id": app,
                "severity_number": severity,
                "body": {"text": text},
            }
        )
    return docs


@pytest.fixture(scope="module")
async def log_templates(stack: Stack) -> list[str]:
    """The logs templates (idempotent), so body.text is full text as in production."""
    return await apply_templates(ElasticsearchSinkConfig(urls=[stack.es_url]))


async def test_log_count_rule_counts_in_elasticsearch(
    timescale_db: str, es: Elasticsearch, run_id: str, stack: Stack, log_templates: list[str]
) -> None:
    """Records with severity >= ERROR matching the text are counted per application; with
    Elasticsearch unreachable the evaluation fails and the firing alert stays as it was."""
    app = f"logs-{run_id[:12]}"
    now = datetime.now(UTC)
    stream = "logs-generic.otel-ingestdtest"
    operations: list[dict[str, Any]] = []
    for doc in _log_docs(app, now):
        operations += [{"create": {"_index": stream}}, doc]
    answer = es.bulk(operations=operations, refresh=True)
    assert not answer["errors"], answer
    config = alerts_config(
        [
            {
                "name": "PaymentErrors",
                "severity": "HIGH",
                "message": "{value:.0f} payment errors in {window_s:.0f} s",
                "application": app,
                "logs": {
                    "min_severity": 17,
                    "match": "payment failed",
                    "window_s": 300,
                    "op": ">=",
                    "threshold": 6,
                },
            }
        ]
    )
    client = AsyncElasticsearch(stack.es_url)
    try:
        (done,) = await evaluate(timescale_db, config, now + S, es=client)
    finally:
        await client.close()
    assert (done.series, done.fired) == (1, 1)
    (alert,) = alerts(timescale_db)
    # 10 records: 6 ERROR with "payment failed", 2 ERROR about the disk, 2 INFO.
    assert alert["message"] == "6 payment errors in 300 s"
    assert alert["applicationid"] == app

    dead = AsyncElasticsearch("http://127.0.0.1:9", request_timeout=2, max_retries=0)
    try:
        with pytest.raises(Exception, match="onnect"):
            await evaluate(timescale_db, config, now + 400 * S, es=dead)
    finally:
        await dead.close()
    assert [a["status"] for a in alerts(timescale_db)] == ["ACTIVE"]
    assert query(timescale_db, "SELECT phase FROM ingestd.alert_states") == [("firing",)]


def live_cpu(app: str, value: float) -> list[dict[str, Any]]:
    """cpu points of the last two minutes (for evaluators on the database clock)."""
    now = datetime.now(UTC)
    return cpu_points(app, now - 120 * S, now, value)


FAST_RULE = {**CPU_RULE, "for_s": 0, "receiver": None, "interval_s": 1}


async def test_two_replicas_evaluating_at_once_write_one_row(timescale_db: str) -> None:
    """Two stages ticking together, and two evaluators racing past the lock, open one row."""
    insert_metrics(timescale_db, live_cpu("api", 0.95))
    config = alerts_config([FAST_RULE])
    one, two = AlertsJob(timescale_db, config, None), AlertsJob(timescale_db, config, None)
    for _ in range(3):
        passes = await asyncio.gather(one.run_once(force=True), two.run_once(force=True))
        assert all(p.errors == {} for p in passes)
    # Without the lock (a misconfigured lock key): the rule row serializes them.
    await asyncio.gather(*(evaluate(timescale_db, config, datetime.now(UTC)) for _ in range(4)))
    # State lost altogether: the partial unique index refuses a second open row.
    query(timescale_db, "DELETE FROM ingestd.alert_states")
    (adopted,) = await evaluate(timescale_db, config, datetime.now(UTC))
    assert adopted.fired == 1
    rows = alerts(timescale_db)
    assert [(a["rule"], a["status"]) for a in rows] == [("HighCpu", "ACTIVE")]
    (state_alert,) = query(timescale_db, "SELECT alertId::text FROM ingestd.alert_states")
    (row_id,) = query(timescale_db, "SELECT id::text FROM alerts")
    assert state_alert == row_id
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(
            timescale_db,
            "INSERT INTO alerts (applicationId, name, severity, rule, fingerprint)"
            " SELECT applicationId, name, severity, rule, fingerprint FROM alerts",
        )


_KILLED_EVALUATOR = """
import asyncio, sys
from ingestd.alerts import stage, store
from tests.integration.alerts_support import alerts_config
import json

original = store._Writes.flush

async def stuck(self, conn):
    await original(self, conn)
    print("written", flush=True)
    await asyncio.sleep(120)

store._Writes.flush = stuck
config = alerts_config(json.loads(sys.argv[2]))
asyncio.run(stage.AlertsJob(sys.argv[1], config, None).run_once(force=True))
"""


async def test_leader_killed_mid_evaluation_leaves_nothing_and_another_takes_over(
    timescale_db: str,
) -> None:
    """kill -9 after every row was written, before commit: nothing is visible, the lock
    is free, and the next evaluator writes exactly one row."""
    insert_metrics(timescale_db, live_cpu("api", 0.95))
    config = alerts_config([FAST_RULE])
    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _KILLED_EVALUATOR, timescale_db, json.dumps([FAST_RULE])),
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line == b"written\n"
        # The row is written inside the open transaction, invisible to others.
        assert alerts(timescale_db) == []
        locked = await AlertsJob(timescale_db, config, None).run_once(force=True)
        assert locked.skipped == "locked"
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
    finally:
        if child.returncode is None:
            child.kill()
    assert alerts(timescale_db) == []
    assert query(timescale_db, "SELECT count(*) FROM ingestd.alert_states") == [(0,)]
    job = AlertsJob(timescale_db, config, None)
    for _ in range(50):
        taken = await job.run_once(force=True)
        if taken.skipped != "locked":
            break
        await asyncio.sleep(0.1)
    assert taken.skipped is None
    assert taken.errors == {}
    await job.run_once(force=True)
    assert [(a["rule"], a["status"]) for a in alerts(timescale_db)] == [("HighCpu", "ACTIVE")]


async def test_database_cut_during_an_evaluation_changes_no_alert(
    timescale_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is cut after the data was read: the firing alert, its state and the
    outbox stay as they were; the next evaluation resolves it. The server is never stopped."""
    config = alerts_config([{**CPU_RULE, "for_s": 0}], receivers=HOOK)
    insert_metrics(timescale_db, cpu_points("api", T0 - 60 * S, T0, 0.95))
    insert_metrics(timescale_db, cpu_points("api", T0 + 10 * S, T0 + 200 * S, 0.1))
    await evaluate(timescale_db, config, T0)
    before = (
        alerts(timescale_db),
        query(timescale_db, "SELECT * FROM ingestd.alert_states"),
        query(timescale_db, "SELECT id, idempotencyKey FROM ingestd.alert_outbox"),
    )
    assert [a["status"] for a in before[0]] == ["ACTIVE"]

    host, port = "127.0.0.1", int(psycopg.conninfo.conninfo_to_dict(timescale_db)["port"] or 5432)
    async with Proxy(host, port) as proxy:
        original = store.read_samples

        async def read_then_cut(*args: Any, **kwargs: Any) -> Any:
            samples = await original(*args, **kwargs)
            await proxy.cut_all()
            return samples

        monkeypatch.setattr(store, "read_samples", read_then_cut)
        with pytest.raises(psycopg.OperationalError):
            await evaluate(proxy.dsn(timescale_db), config, T0 + 150 * S)
    after = (
        alerts(timescale_db),
        query(timescale_db, "SELECT * FROM ingestd.alert_states"),
        query(timescale_db, "SELECT id, idempotencyKey FROM ingestd.alert_outbox"),
    )
    assert after == before
    monkeypatch.undo()
    (resolved,) = await evaluate(timescale_db, config, T0 + 150 * S)
    assert resolved.resolved == 1
    assert [a["status"] for a in alerts(timescale_db)] == ["RESOLVED"]


class Receiver:
    """A local webhook receiver that records what it got, by Idempotency-Key."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.authorization: list[str | None] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.authorization.append(request.headers.get("Authorization"))
        self.got.append((request.headers["Idempotency-Key"], await request.json()))
        return web.Response(text="ok")

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def deliver(dsn: str, config: AlertsConfig) -> notify.Delivery:
    conn = await connect(dsn, purpose="alerts-test")
    try:
        async with aiohttp.ClientSession() as session:
            return await notify.deliver_due(conn, config, session)
    finally:
        await conn.close()


async def test_webhook_down_then_up_gets_each_transition_once_in_order(
    timescale_db: str,
) -> None:
    """Firing and resolved wait while the receiver is down, then arrive once each, in order,
    with Alertmanager's webhook payload and a stable Idempotency-Key."""
    port = free_port()
    receivers = [
        {
            "name": "hook",
            "url": f"http://127.0.0.1:{port}/hook",
            "timeout_s": 2,
            "bearer_token": "s3cret-webhook-token",
        }
    ]
    config = alerts_config(
        [{**CPU_RULE, "for_s": 0, "annotations": {"summary": "cpu of {application}"}}],
        receivers=receivers,
        external_url="https://deep-eyes.example",
        retry_initial_delay_s=0.2,
    )
    insert_metrics(timescale_db, cpu_points("api", T0 - 60 * S, T0, 0.95))
    insert_metrics(timescale_db, cpu_points("api", T0 + 10 * S, T0 + 200 * S, 0.1))
    await evaluate(timescale_db, config, T0)
    await evaluate(timescale_db, config, T0 + 150 * S)

    down = await deliver(timescale_db, config)
    # Only the firing one was tried: the resolved one waits behind it.
    assert (down.sent, down.failed) == (0, 1)
    receiver = Receiver()
    await receiver.start(port)
    try:
        await asyncio.sleep(0.5)
        up = await deliver(timescale_db, config)
        assert (up.sent, up.failed) == (2, 0)
        assert await deliver(timescale_db, config) == notify.Delivery()
    finally:
        await receiver.stop()
    assert [body["status"] for _, body in receiver.got] == ["firing", "resolved"]
    assert receiver.authorization == ["Bearer s3cret-webhook-token"] * 2
    keys = [key for key, _ in receiver.got]
    assert len(set(keys)) == 2
    firing = receiver.got[0][1]
    assert set(firing) == {
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
        "commonLabels", "commonAnnotations", "externalURL", "alerts",
    }  # fmt: skip
    (alert,) = firing["alerts"]
    assert set(alert) == {
        "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"
    }  # fmt: skip
    assert alert["labels"]["alertname"] == "HighCpu"
    assert alert["annotations"]["summary"] == "cpu of api"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == "https://deep-eyes.example/alerts?rule=HighCpu"
    resolved = receiver.got[1][1]["alerts"][0]
    assert resolved["startsAt"] == alert["startsAt"]
    assert resolved["endsAt"] == (T0 + 150 * S).isoformat().replace("+00:00", "Z")
    assert keys[0] == f"{alert['fingerprint']}:firing:{int(T0.timestamp())}"


@pytest.mark.parametrize("aggregate", ["avg", "count", "max"])
async def test_rollup_served_rule_gives_the_raw_answer(tier_db: str, aggregate: str) -> None:
    """A whole-hours, unfiltered, per-application rule reads the hourly rollup plus raw edges
    (before and after a rollup refresh) and finds what the raw rows say, on each tier."""
    timescale_db = tier_db
    now = datetime.now(UTC).replace(microsecond=0)
    points = [
        {"timestamp": now - i * 10 * S, "app": "api", "name": "cpu", "value": float(i % 17)}
        for i in range(3 * 360)
    ]
    insert_metrics(timescale_db, points)
    rule = {
        "name": "Rolled",
        "severity": "LOW",
        "metric": {
            "name": "cpu",
            "aggregate": aggregate,
            "by": "application",
            "window_s": 7200,
            "op": ">",
            "threshold": -1,
        },
    }
    config = alerts_config([rule])
    sql_aggregate = {"avg": "avg", "count": "count", "max": "max"}[aggregate]
    ((expected,),) = query(
        timescale_db,
        f"SELECT {sql_aggregate}(value)::float8 FROM metrics WHERE timestamp > %s"
        " AND timestamp <= %s",
        (now - 7200 * S, now),
    )
    for refresh in (False, True):
        if refresh:
            await maintenance.maintain_once(timescale_db, MaintenanceConfig(), trigger="manual")
            # apache/postgres: ingestd's rollup table; full: the continuous aggregate.
            ((table,),) = query(
                timescale_db,
                "SELECT coalesce(to_regclass('ingestd.metrics_hourly_rollup')::text,"
                " 'metrics_hourly')",
            )
            ((rolled,),) = query(timescale_db, f"SELECT count(*) FROM {table}")
            assert rolled > 0, f"the refresh wrote nothing into {table}"
        query(timescale_db, "DELETE FROM ingestd.alert_states")
        (done,) = await evaluate(timescale_db, config, now)
        assert done.series == 1
        ((value,),) = query(timescale_db, "SELECT value FROM ingestd.alert_states")
        assert value == pytest.approx(expected)


_ALERTMANAGER_CONFIG = """
route: {receiver: blackhole, group_wait: 0s, group_interval: 1s}
receivers: [{name: blackhole}]
"""


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[str]:
    """A real Alertmanager (Debian's prometheus-alertmanager) on a free port; its base URL."""
    binary = (
        os.environ.get("INGESTD_ALERTMANAGER_BIN")
        or shutil.which("prometheus-alertmanager")
        or shutil.which("alertmanager")
    )
    if binary is None:
        unavailable("no Alertmanager binary: apt-get install prometheus-alertmanager")
    assert binary is not None
    (tmp_path / "am.yml").write_text(_ALERTMANAGER_CONFIG)
    port = free_port()
    child = await asyncio.create_subprocess_exec(
        *(binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path}"),
        *(f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/-/ready") as answer:
                        if answer.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield url
    finally:
        child.terminate()
        await child.wait()


async def active_alerts(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v2/alerts") as r:
        assert r.status == 200
        found: list[dict[str, Any]] = await r.json()
        return found


async def test_a_real_alertmanager_gets_firing_then_resolved(
    timescale_db: str, alertmanager: str
) -> None:
    """POST /api/v2/alerts: Alertmanager lists the alert as active, then no longer once the
    resolved transition (with endsAt) is delivered; the refresh re-sends firing alerts."""
    receivers = [{"name": "am", "kind": "alertmanager", "url": alertmanager}]
    config = alerts_config([{**CPU_RULE, "for_s": 0, "receiver": "am"}], receivers=receivers)
    # Evaluations at real times: Alertmanager compares endsAt with its own clock.
    now = datetime.now(UTC).replace(microsecond=0) - 120 * S
    insert_metrics(timescale_db, cpu_points("api", now - 60 * S, now, 0.95))
    await evaluate(timescale_db, config, now)
    assert (await deliver(timescale_db, config)).sent == 1
    (alert,) = await active_alerts(alertmanager)
    assert alert["labels"]["alertname"] == "HighCpu"
    assert alert["labels"]["application"] == "api"
    assert alert["status"]["state"] == "active"
    assert alert["annotations"]["message"] == "api cpu 0.95 > 0.8"

    conn = await connect(timescale_db, purpose="alerts-test")
    try:
        async with aiohttp.ClientSession() as session:
            assert await notify.refresh_alertmanagers(conn, config, session) == 1
    finally:
        await conn.close()

    insert_metrics(timescale_db, cpu_points("api", now + 10 * S, now + 110 * S, 0.1))
    (resolved,) = await evaluate(timescale_db, config, now + 110 * S)
    assert resolved.resolved == 1
    assert (await deliver(timescale_db, config)).sent == 1
    assert await active_alerts(alertmanager) == []


async def test_a_series_that_stops_reporting_resolves_unless_no_data_keep(
    timescale_db: str,
) -> None:
    """No data resolves after keep_firing_for_s; with no_data: keep the alert stays firing."""
    rules = [
        {**CPU_RULE, "for_s": 0, "keep_firing_for_s": 120, "receiver": None},
        {**CPU_RULE, "name": "Kept", "for_s": 0, "no_data": "keep", "receiver": None},
    ]
    config = alerts_config(rules)
    insert_metrics(timescale_db, cpu_points("api", T0 - 60 * S, T0, 0.95))
    await evaluate(timescale_db, config, T0)
    # The series reports nothing after T0 (windows of 60 s).
    lapsed, kept = await evaluate(timescale_db, config, T0 + 90 * S)
    assert (lapsed.series, lapsed.firing, lapsed.resolved) == (0, 1, 0)
    assert (kept.firing, kept.resolved) == (1, 0)
    # keep_firing_for_s counts from the first evaluation without the condition (T0 + 90 s).
    lapsed, kept = await evaluate(timescale_db, config, T0 + 209 * S)
    assert (lapsed.firing, lapsed.resolved) == (1, 0)
    lapsed, kept = await evaluate(timescale_db, config, T0 + 210 * S)
    assert (lapsed.firing, lapsed.resolved) == (0, 1)
    assert (kept.firing, kept.resolved) == (1, 0)
    statuses = {a["rule"]: a["status"] for a in alerts(timescale_db)}
    assert statuses == {"HighCpu": "RESOLVED", "Kept": "ACTIVE"}


async def test_the_schedule_is_shared_by_the_replicas(timescale_db: str) -> None:
    """A rule evaluated by one replica is not due for another until its interval has passed."""
    insert_metrics(timescale_db, live_cpu("api", 0.95))
    config = alerts_config([{**FAST_RULE, "interval_s": 2}])
    one, two = AlertsJob(timescale_db, config, None), AlertsJob(timescale_db, config, None)
    first = await one.run_once()
    assert [e.rule for e in first.evaluations] == ["HighCpu"]
    assert (await two.run_once()).evaluations == []
    assert (await one.run_once()).evaluations == []
    await asyncio.sleep(2)
    later = await two.run_once()
    assert [(e.rule, e.skipped) for e in later.evaluations] == [("HighCpu", False)]
    ((outcome, series),) = query(
        timescale_db, "SELECT lastOutcome, series FROM ingestd.alert_rules"
    )
    assert (outcome, series) == ("ok", 1)


async def test_an_alert_about_no_application_is_still_unique(timescale_db: str) -> None:
    """per_application: false writes applicationId null, and NULLS NOT DISTINCT keeps it to one
    open row."""
    insert_metrics(timescale_db, cpu_points("api", T0 - 60 * S, T0, 0.96))
    insert_metrics(timescale_db, cpu_points("web", T0 - 60 * S, T0, 0.9))
    metric = {"name": "cpu", "aggregate": "avg", "by": "application", "window_s": 60,
              "threshold": 0.8}  # fmt: skip
    rule = {**CPU_RULE, "for_s": 0, "receiver": None, "per_application": False, "metric": metric}
    config = alerts_config([rule])
    (first,) = await evaluate(timescale_db, config, T0)
    assert (first.series, first.fired) == (1, 1)
    query(timescale_db, "DELETE FROM ingestd.alert_states")  # forget, to force a second insert
    (again,) = await evaluate(timescale_db, config, T0 + 30 * S)
    assert again.fired == 1
    (alert,) = alerts(timescale_db)
    assert (alert["applicationid"], alert["status"]) == (None, "ACTIVE")
    assert alert["message"] == " cpu 0.93 > 0.8"
    with pytest.raises(psycopg.errors.UniqueViolation):
        query(
            timescale_db,
            "INSERT INTO alerts (name, severity, rule, fingerprint)"
            " SELECT name, severity, rule, fingerprint FROM alerts",
        )


async def test_the_daemon_alerts_on_ingested_metrics_and_notifies(timescale_db: str) -> None:
    """End to end: OTLP metrics in over gRPC, the daemon's alerts stage (SINKS layer) writes
    one row per series over the threshold and POSTs each to the webhook."""
    port = free_port()
    alerts_section = {
        "enabled": True,
        "tick_s": 0.2,
        "receivers": [{"name": "hook", "url": f"http://127.0.0.1:{port}/hook"}],
        "default_receiver": "hook",
        "rules": [
            {
                "name": "MemoryHigh",
                "severity": "LOW",
                "interval_s": 0.5,
                "metric": {"name": "process.memory.usage", "aggregate": "max", "threshold": 1},
            }
        ],
    }
    receiver = Receiver()
    await receiver.start(port)
    try:
        async with (
            running(config_text(timescale_db, alerts=alerts_section)) as run,
            stubs(run.target) as (_, metrics_stub),
        ):
            # Gauge values 0, 1.5 and 3.0 on routes /api/r0, r1, r2.
            await metrics_stub.Export(metric_request(3))
            for _ in range(100):
                if len(receiver.got) >= 2:
                    break
                await asyncio.sleep(0.1)
            assert "alerts" in run.daemon.pipeline.status_sources()
    finally:
        await receiver.stop()
    rows = alerts(timescale_db)
    assert sorted(a["labels"]["http_route"] for a in rows) == ["/api/r1", "/api/r2"]
    assert {a["status"] for a in rows} == {"ACTIVE"}
    routes = sorted(body["alerts"][0]["labels"]["http_route"] for _, body in receiver.got)
    assert routes == ["/api/r1", "/api/r2"]
