"""Deep Eyes' Prisma 7 client, generated from schema/prisma/schema.prisma, reads what ingestd
stored from OTLP requests: its four example queries, on every tier this machine has."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import yaml

from ingestd import config
from ingestd.convert.identity import application_id_of
from ingestd.schema import command
from tests.harness import config_text, running, stubs
from tests.integration import prisma_support
from tests.integration.conftest import TierDatabase
from tests.samples import RESOURCE, metric_request, span_request

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP_ID = application_id_of(
    RESOURCE["service.namespace"], RESOURCE["service.name"], RESOURCE["deployment.environment"]
)


@pytest.fixture(scope="module")
def prisma_client() -> Any:
    """The client generated once per session from the repo's schema (npm cache outside the repo)."""
    return prisma_support.generate(prisma_support.install())


def prisma_url(dsn: str) -> str:
    """The test database as Deep Eyes' .env would name it, Prisma-only parameters included."""
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    auth = parts["user"] + (f":{parts['password']}" if parts.get("password") else "")
    return (
        f"postgresql://{auth}@{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}"
        f"/{parts['dbname']}?schema=public&connection_limit=5"
    )


async def apply_from_database_url(db: TierDatabase, url: str, monkeypatch: Any) -> None:
    """`schema apply` with no DSN in the config: it connects with DATABASE_URL."""
    monkeypatch.setenv("DATABASE_URL", url)
    doc = {"sinks": {"elasticsearch": {"enabled": False}}, "schema": {"tier": db.config_tier}}
    lines: list[str] = []
    await command.apply(config.parse(yaml.safe_dump(doc), environ={}), lines.append)
    assert lines[-1] == "postgres: done", lines


async def test_deep_eyes_queries_read_what_ingestd_stored(
    tier_database: TierDatabase, prisma_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traces by startTime, metrics by timestamp, metrics_hourly with the current hour, and
    active alerts by severity come back through the Prisma client after one OTLP export."""
    db = tier_database
    url = prisma_url(db.dsn)
    await apply_from_database_url(db, url, monkeypatch)
    async with running(config_text(db.dsn)) as daemon, stubs(daemon.target) as (traces, metrics):
        await traces.Export(span_request(5, tag="prisma"), timeout=30)
        await metrics.Export(metric_request(4, tag="prisma"), timeout=30)
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alerts (applicationId, name, severity, status) VALUES"
            " (%s, 'disk', 'LOW', 'ACTIVE'), (%s, 'errors', 'CRITICAL', 'ACTIVE'),"
            " (%s, 'latency', 'HIGH', 'RESOLVED'), (NULL, 'ingestd', 'MEDIUM', 'ACTIVE')",
            (APP_ID, APP_ID, APP_ID),
        )
        conn.execute("UPDATE alerts SET resolvedAt = now() WHERE status = 'RESOLVED'")

    answer = await asyncio.to_thread(prisma_support.deep_eyes_queries, prisma_client, url, APP_ID)

    spans = answer["traces"]
    assert len(spans) == 5
    assert {s["applicationId"] for s in spans} == {APP_ID}
    starts = [s["startTime"] for s in spans]
    assert starts == sorted(starts, reverse=True)
    assert all(len(s["traceId"]) == 32 and len(s["spanId"]) == 16 for s in spans)
    assert spans[0]["attributes"]["http.route"] == "/api/items/{id}"

    points = answer["metrics"]
    # 4 sum points, 4 gauge points, 1 histogram (every 8th series)
    assert len(points) == 9
    assert {p["name"] for p in points} == {
        "http.server.requests",
        "process.memory.usage",
        "http.server.duration",
    }
    histogram = next(p for p in points if p["type"] == "histogram")
    assert histogram["bucketCounts"] == ["1", "2", "3", "0", "0", "4", "0", "0", "0"]

    gauge = next(p for p in points if p["name"] == "process.memory.usage")
    stamp = datetime.fromisoformat(gauge["timestamp"].replace("Z", "+00:00"))
    hour = stamp.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hourly = {(h["name"], h["bucket"]): h for h in answer["hourly"]}
    current = hourly[("process.memory.usage", _iso(hour))]
    assert current["countValue"] == "4"
    assert current["sumValue"] == pytest.approx(1.5 * (0 + 1 + 2 + 3))
    assert _iso(hour - timedelta(hours=1)) not in {b for _, b in hourly}

    alerts = answer["alerts"]
    assert [a["severity"] for a in alerts] == ["CRITICAL", "MEDIUM", "LOW"]
    assert alerts[0]["application"]["name"] == "checkout"
    assert alerts[1]["application"] is None
    assert answer["application"]["registeredAt"] is None  # derived by ingest, not registered


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
