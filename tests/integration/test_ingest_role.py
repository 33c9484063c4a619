"""The ingest role on the real database: the writers hold exactly what they need, and ingest works.

`schema apply` runs as the owner (`sinks.timescale.owner_dsn`); the daemon's writers connect
as the dev stack's `ingestd_writer` (INGESTD_PG_INGEST_DSN, a member of `ingestd_ingest`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import yaml
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from ingestd import config
from ingestd.schema.grants import INGEST_PRIVILEGES, OWNER_ONLY
from tests.harness import IngestdProcess, base_config, deep_merge
from tests.integration.conftest import Stack, TierDatabase, env
from tests.integration.schema_support import apply, rows
from tests.samples import metric_request, span_request

pytestmark = [pytest.mark.integration]


def writer_dsn(db: TierDatabase) -> str:
    """The dev stack's writer login, pointed at *db*'s database."""
    dbname = psycopg.conninfo.conninfo_to_dict(db.dsn)["dbname"]
    return psycopg.conninfo.make_conninfo(env("INGESTD_PG_INGEST_DSN"), dbname=dbname)


def split_config(db: TierDatabase) -> config.Config:
    doc = {
        "sinks": {
            "timescale": {"dsn": writer_dsn(db), "owner_dsn": db.dsn},
            "elasticsearch": {"enabled": False},
        },
        "schema": {"tier": db.config_tier},
    }
    return config.parse(yaml.safe_dump(doc), environ={})


@pytest.fixture(scope="module", params=["apache", "postgres"])
def applied(request: pytest.FixtureRequest, make_database: Callable[[], str]) -> TierDatabase:
    """A database of each tier, applied by the owner with the writers split off."""
    db = TierDatabase(request.param, make_database())
    lines = asyncio.run(apply(split_config(db)))
    text = "\n".join(lines)
    assert f"ingest role ingestd_ingest: granted on {len(INGEST_PRIVILEGES)} tables" in text
    assert "the writers' login ingestd_writer is a member" in text
    return db


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM users",
        "SELECT passwordHash FROM users",
        "SELECT * FROM alerts",
        "SELECT * FROM traces",
        "DELETE FROM ingestd.ledger",
        "UPDATE ingestd.ledger SET items = 0",
        "SELECT * FROM ingestd.policies",
        "CREATE TABLE public.evil (id int)",
        "CREATE TABLE ingestd.evil (id int)",
        "DROP TABLE traces",
        "ALTER TABLE metrics ADD COLUMN evil int",
        "TRUNCATE metrics",
        "CREATE INDEX evil ON traces (name)",
        "GRANT SELECT ON users TO ingestd_writer",
    ],
)
def test_ingest_role_cannot_read_users_or_run_ddl(applied: TierDatabase, statement: str) -> None:
    """The writers' login is refused everything outside the writers' list (users, DDL, reads)."""
    with (
        psycopg.connect(writer_dsn(applied), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_every_table_is_classified(applied: TierDatabase) -> None:
    """Each table of the applied schema is in the writers' list or the owner-only list."""
    found = {
        f"{schema}.{name}"
        for schema, name in rows(
            applied.dsn,
            "SELECT n.nspname, c.relname FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('public', 'ingestd') AND c.relkind IN ('r', 'p', 'v', 'm')"
            " AND NOT c.relispartition",
        )
    }
    unclassified = found - set(INGEST_PRIVILEGES) - OWNER_ONLY
    assert not unclassified, f"name these in ingestd/schema/grants.py: {sorted(unclassified)}"
    both = set(INGEST_PRIVILEGES) & OWNER_ONLY
    assert not both


def test_ingest_works_with_the_ingest_role(
    applied: TierDatabase, stack: Stack, tmp_path: Path
) -> None:
    """The daemon writes spans and metrics (COPY, ledger, dimensions) as the ingest role."""
    cfg: dict[str, Any] = deep_merge(
        base_config(writer_dsn(applied), stack.es_url, stack.redis_url),
        {
            "sinks": {"timescale": {"owner_dsn": applied.dsn}, "elasticsearch": {"enabled": False}},
            "schema": {"tier": applied.config_tier},
            "maintenance": {"enabled": True, "interval_s": 1},
        },
    )
    proc = IngestdProcess(cfg, tmp_path)
    try:
        proc.wait_ready()
        port = proc.port_of("grpc_listening")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            traces = trace_service_pb2_grpc.TraceServiceStub(channel)
            request = span_request(20, tag="role")
            assert not traces.Export(request, timeout=30).partial_success.rejected_spans
            traces.Export(request, timeout=30)  # a retry: the ledger read finds it
            metrics = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            answer = metrics.Export(metric_request(8, tag="role"), timeout=30)
            assert not answer.partial_success.rejected_data_points
        assert rows(applied.dsn, "SELECT count(*) FROM traces") == [(20,)]
        assert rows(applied.dsn, "SELECT count(*) > 0 FROM metrics") == [(True,)]
        assert rows(applied.dsn, "SELECT count(*) FROM ingestd.ledger") == [(2,)]
        assert rows(applied.dsn, "SELECT count(*) > 0 FROM applications") == [(True,)]
        writers = rows(
            applied.dsn,
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()",
        )
        assert ("ingestd_writer",) in writers
        # The maintenance stage runs as the owner: its runs are recorded without errors.
        deadline = time.monotonic() + 30
        while not rows(applied.dsn, "SELECT count(*) FROM ingestd.maintenance_runs")[0][0]:
            assert time.monotonic() < deadline, "no maintenance run recorded"
            time.sleep(0.5)
        statuses = rows(applied.dsn, "SELECT status, error FROM ingestd.maintenance_runs")
        assert all(status in ("ok", "running") for status, _ in statuses), statuses
    finally:
        proc.terminate()


def test_ingest_role_runs_the_key_lookup_and_reads_nothing_else_of_keys(
    applied: TierDatabase,
) -> None:
    """The application key cache's query works as the writers' login; other key columns do not."""
    from ingestd.appkeys import _QUERY as KEY_LOOKUP

    with psycopg.connect(applied.dsn, autocommit=True) as owner:
        owner.execute(
            "INSERT INTO applications (id, name) VALUES ('role-app', 'role-app')"
            " ON CONFLICT (id) DO NOTHING"
        )
        owner.execute(
            "INSERT INTO application_keys (applicationId, keyHash, prefix, name)"
            " VALUES ('role-app', repeat('a', 64), 'ik_secretpre', 'ops key')"
            " ON CONFLICT (keyHash) DO NOTHING"
        )
    with psycopg.connect(writer_dsn(applied), autocommit=True) as conn:
        assert conn.execute(KEY_LOOKUP, (["a" * 64],)).fetchall() == [("a" * 64, "role-app")]
        for column in ("prefix", "name", "id", "*"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT {column} FROM application_keys")
