"""Notifications: Alertmanager's webhook payload or its API v2 alerts, sent from the outbox.

store.py writes one outbox row per transition and receiver, in the transaction of the state
change, so a notification exists exactly when its transition was committed. `deliver_due`
sends due rows oldest first; a row waits while an older row of the same fingerprint and
receiver is undelivered (a "resolved" never overtakes its "firing"). Delivery is at least
once: a replica killed between the POST and the commit sends the row again, with the same
`Idempotency-Key` header (fingerprint:transition:startsAt), so a receiver can drop repeats.
A failed POST is retried with exponential backoff (alerts.retry_*_delay_s), for ever.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from ingestd.alerts.config import AlertsConfig, ReceiverConfig
from ingestd.alerts.rules import Sample, render
from ingestd.observe import metrics
from ingestd.schema.db import Connection

log = structlog.get_logger("ingestd.alerts.notify")

# Alertmanager writes this for "not ended" (Go's zero time).
ZERO_TIME = "0001-01-01T00:00:00Z"
WEBHOOK_VERSION = "4"
BATCH = 100


@dataclass(frozen=True)
class AlertEvent:
    """One transition of one alert, everything a payload needs."""

    rule: str
    fingerprint: str
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None

    @property
    def idempotency_key(self) -> str:
        return f"{self.fingerprint}:{self.status}:{int(self.starts_at.timestamp())}"


def _iso(t: datetime | None) -> str:
    if t is None:
        return ZERO_TIME
    return t.isoformat().replace("+00:00", "Z")


def generator_url(config: AlertsConfig, rule: str) -> str:
    if not config.external_url:
        return ""
    return f"{config.external_url.rstrip('/')}/alerts?rule={quote(rule, safe='')}"


def webhook_payload(config: AlertsConfig, receiver: str, event: AlertEvent) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for one alert in a group of its own."""
    return {
        "version": WEBHOOK_VERSION,
        "groupKey": f'{{}}:{{alertname="{event.rule}", fingerprint="{event.fingerprint}"}}',
        "truncatedAlerts": 0,
        "status": event.status,
        "receiver": receiver,
        "groupLabels": {"alertname": event.rule},
        "commonLabels": event.labels,
        "commonAnnotations": event.annotations,
        "externalURL": config.external_url,
        "alerts": [
            {
                "status": event.status,
                "labels": event.labels,
                "annotations": event.annotations,
                "startsAt": _iso(event.starts_at),
                "endsAt": _iso(event.ends_at),
                "generatorURL": generator_url(config, event.rule),
                "fingerprint": event.fingerprint,
            }
        ],
    }


def alertmanager_payload(config: AlertsConfig, event: AlertEvent) -> list[dict[str, Any]]:
    """Body of `POST /api/v2/alerts`. A firing alert is sent without endsAt; Alertmanager
    then keeps it for its resolve_timeout (5 m by default), so ingestd re-sends firing
    alerts (see `refresh_due`) and sends endsAt on resolve."""
    alert: dict[str, Any] = {
        "labels": event.labels,
        "annotations": event.annotations,
        "startsAt": _iso(event.starts_at),
        "generatorURL": generator_url(config, event.rule),
    }
    if event.ends_at is not None:
        alert["endsAt"] = _iso(event.ends_at)
    return [alert]


def payload_for(config: AlertsConfig, receiver: ReceiverConfig, event: AlertEvent) -> Any:
    if receiver.kind == "alertmanager":
        return alertmanager_payload(config, event)
    return webhook_payload(config, receiver.name, event)


async def enqueue(
    conn: Connection, config: AlertsConfig, receiver: ReceiverConfig, event: AlertEvent
) -> None:
    """Add the event's notification to the outbox (inside the caller's transaction)."""
    await conn.execute(
        "INSERT INTO ingestd.alert_outbox (idempotencyKey, receiver, fingerprint, payload)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (idempotencyKey, receiver) DO NOTHING",
        (
            event.idempotency_key,
            receiver.name,
            event.fingerprint,
            orjson.dumps(payload_for(config, receiver, event)).decode(),
        ),
    )


@dataclass
class Delivery:
    sent: int = 0
    failed: int = 0


_DUE = """
SELECT o.id, o.idempotencyKey, o.receiver, o.payload::text, o.attempts
FROM ingestd.alert_outbox AS o
WHERE o.deliveredAt IS NULL AND o.nextAttemptAt <= now()
  AND NOT EXISTS (SELECT FROM ingestd.alert_outbox AS e
                  WHERE e.fingerprint = o.fingerprint AND e.receiver = o.receiver
                    AND e.deliveredAt IS NULL AND e.id < o.id)
ORDER BY o.id
LIMIT %s
FOR UPDATE OF o SKIP LOCKED
"""


async def deliver_due(
    conn: Connection, config: AlertsConfig, session: aiohttp.ClientSession
) -> Delivery:
    """Send the due outbox rows, a batch per transaction, until none is due (a delivered
    "firing" makes its "resolved" due). Never raises for a receiver's failure (counted,
    retried later); raises when the database fails."""
    done = Delivery()
    while True:
        batch = await _deliver_batch(conn, config, session)
        done.sent += batch.sent
        done.failed += batch.failed
        if batch.sent == 0:
            return done


async def _deliver_batch(
    conn: Connection, config: AlertsConfig, session: aiohttp.ClientSession
) -> Delivery:
    done = Delivery()
    receivers = {r.name: r for r in config.receivers}
    async with conn.transaction():
        cur = await conn.execute(_DUE, (BATCH,))
        for row_id, key, name, payload, attempts in await cur.fetchall():
            receiver = receivers.get(name)
            error = (
                await _post(receiver, session, key, payload.encode())
                if receiver is not None
                else f"no receiver named {name!r} in the config"
            )
            if error is None:
                done.sent += 1
                metrics.ALERTS_NOTIFICATIONS.labels(outcome="sent").inc()
                await conn.execute(
                    "UPDATE ingestd.alert_outbox SET deliveredAt = now(), attempts = attempts + 1,"
                    " lastError = NULL WHERE id = %s",
                    (row_id,),
                )
                continue
            done.failed += 1
            metrics.ALERTS_NOTIFICATIONS.labels(outcome="failed").inc()
            delay = min(config.retry_initial_delay_s * 2**attempts, config.retry_max_delay_s)
            log.warning(
                "alert_notification_failed",
                receiver=name,
                key=key,
                error=error,
                attempts=attempts + 1,
                retry_in_s=delay,
            )
            await conn.execute(
                "UPDATE ingestd.alert_outbox SET attempts = attempts + 1, lastError = %s,"
                " nextAttemptAt = now() + make_interval(secs => %s) WHERE id = %s",
                (error[:500], delay, row_id),
            )
    return done


async def _post(
    receiver: ReceiverConfig, session: aiohttp.ClientSession, key: str, body: bytes
) -> str | None:
    url = receiver.url
    if receiver.kind == "alertmanager":
        url = f"{url.rstrip('/')}/api/v2/alerts"
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    if receiver.bearer_token:
        headers["Authorization"] = f"Bearer {receiver.bearer_token}"
    began = time.monotonic()
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=receiver.timeout_s)
        ) as answer:
            if 200 <= answer.status < 300:
                log.debug(
                    "alert_notified",
                    receiver=receiver.name,
                    key=key,
                    ms=round((time.monotonic() - began) * 1000),
                )
                return None
            text = (await answer.text())[:200]
            return f"HTTP {answer.status}: {text}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def refresh_alertmanagers(
    conn: Connection, config: AlertsConfig, session: aiohttp.ClientSession
) -> int:
    """Re-send every firing alert to the Alertmanager receivers of its rule, as Prometheus
    does each evaluation: Alertmanager resolves an alert resolve_timeout (5 m by default)
    after its last update. Best effort (a failure waits for the next refresh; the transitions
    themselves go through the outbox). Returns the alerts sent."""
    receivers = {r.name: r for r in config.receivers if r.kind == "alertmanager"}
    rules = {
        rule.name: rule
        for rule in config.rules
        if (receiver := config.receiver_of(rule)) is not None and receiver.name in receivers
    }
    if not rules:
        return 0
    cur = await conn.execute(
        "SELECT rule, fingerprint, labels, firingSince, applicationId, value"
        " FROM ingestd.alert_states WHERE phase = 'firing' AND rule = ANY(%s)",
        (list(rules),),
    )
    batches: dict[str, list[dict[str, Any]]] = {}
    for rule_name, fp, labels, firing_since, app, value in await cur.fetchall():
        rule = rules[rule_name]
        receiver = config.receiver_of(rule)
        assert receiver is not None
        sample = Sample(app, {}, value)
        annotations = {k: render(v, rule, sample) for k, v in rule.annotations.items()}
        annotations.setdefault("message", render(rule.message, rule, sample))
        event = AlertEvent(rule_name, fp, "firing", labels, annotations, firing_since, None)
        batches.setdefault(receiver.name, []).extend(alertmanager_payload(config, event))
    sent = 0
    for name, alerts in batches.items():
        error = await _post(receivers[name], session, "refresh", orjson.dumps(alerts))
        if error is None:
            sent += len(alerts)
        else:
            log.warning("alertmanager_refresh_failed", receiver=name, error=error)
    return sent


async def prune_delivered(conn: Connection, config: AlertsConfig) -> None:
    await conn.execute(
        "DELETE FROM ingestd.alert_outbox WHERE deliveredAt < now() - %s",
        (timedelta(days=config.outbox_retention_days),),
    )
