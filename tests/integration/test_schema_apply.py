"""`ingestd schema apply` / `status` on each tier: creation, idempotence, refusals, the queries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from ingestd.config import Config
from ingestd.errors import SchemaError
from ingestd.schema import command
from ingestd.schema.db import connect
from ingestd.schema.migrations import DEFAULT_DIR
from ingestd.schema.policies import job_settings
from tests.integration.conftest import TierDatabase
from tests.integration.schema_support import (
    DAY,
    HOUR,
    MINUTE,
    apply,
    db_now,
    insert_points,
    insert_spans,
    make_config,
    rows,
    write_config,
)

pytestmark = pytest.mark.integration

DEEP_EYES = {
    "metrics": "SELECT * FROM metrics WHERE timestamp > NOW() - INTERVAL '24 hours'"
    " ORDER BY timestamp DESC;",
    "metrics_hourly": "SELECT * FROM metrics_hourly WHERE bucket > NOW() - INTERVAL '7 days'"
    " ORDER BY bucket DESC;",
    "traces": "SELECT * FROM traces WHERE applicationId = 'app-id'"
    " AND startTime > NOW() - INTERVAL '1 hour' ORDER BY startTime DESC;",
    "alerts": "SELECT * FROM alerts WHERE status = 'ACTIVE' ORDER BY severity DESC,"
    " createdAt DESC;",
    "hypertables": "SELECT * FROM timescaledb_information.hypertables;",
    "compression_settings": "SELECT * FROM timescaledb_information.compression_settings;",
    "continuous_aggregates": "SELECT * FROM timescaledb_information.continuous_aggregates;",
}


def relkind(dsn: str, name: str) -> str | None:
    found = rows(dsn, "SELECT c.relkind FROM pg_class AS c WHERE c.oid = to_regclass(%s)", (name,))
    return found[0][0] if found else None


async def test_apply_on_an_empty_database_builds_the_tier(tier_database: TierDatabase) -> None:
    """A first apply detects the tier, runs its files in order and creates every relation."""
    db = tier_database
    lines = await apply(make_config(db))
    assert f"postgres: tier {db.tier} (" in "\n".join(lines)
    applied = [line.split()[2] for line in lines if line.startswith("postgres: applied ")]
    assert applied[:3] == ["001_ingestd.sql", "002_dimensions.sql", "003_alerts_users.sql"]
    assert applied == sorted(applied)
    assert lines[-1] == "postgres: done"
    for table in (
        "resources",
        "scopes",
        "applications",
        "metric_descriptions",
        "alerts",
        "users",
        "ingestd.ledger",
        "ingestd.migrations",
    ):
        assert relkind(db.dsn, table) == "r", table
    assert relkind(db.dsn, "ingestd.retention_policies") == "v"
    # In public even for a role named like our internal schema ("$user", public search_path).
    assert relkind(db.dsn, "public.metrics") in ("r", "p")
    assert relkind(db.dsn, "ingestd.metrics") is None
    recorded = rows(db.dsn, "SELECT DISTINCT tier FROM ingestd.migrations")
    assert recorded == [(db.tier,)]
    if db.tier == "postgres":
        assert relkind(db.dsn, "metrics") == relkind(db.dsn, "traces") == "p"
        assert not rows(db.dsn, "SELECT FROM pg_extension WHERE extname = 'timescaledb'")
        assert relkind(db.dsn, "metrics_hourly") == "v"
    else:
        hypertables = rows(
            db.dsn,
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = 'public' ORDER BY 1",
        )
        assert hypertables == [("metrics",), ("traces",)]
    if db.tier == "full":
        caggs = rows(
            db.dsn,
            "SELECT view_name, materialized_only"
            " FROM timescaledb_information.continuous_aggregates ORDER BY 1",
        )
        assert caggs == [("metrics_daily", False), ("metrics_hourly", False)]
    elif db.tier == "apache":
        assert relkind(db.dsn, "metrics_hourly") == relkind(db.dsn, "metrics_daily") == "v"


async def test_second_apply_changes_nothing(tier_database: TierDatabase) -> None:
    """Applying again runs no file, changes no policy and says so."""
    db = tier_database
    cfg = make_config(db)
    await apply(cfg)
    before = rows(db.dsn, "SELECT name, checksum, appliedAt FROM ingestd.migrations ORDER BY 1")
    jobs_before = _jobs(db)
    lines = await apply(cfg)
    assert not [line for line in lines if "applied " in line and "up to date" not in line]
    assert "postgres: migrations: up to date" in "\n".join(lines)
    assert "postgres: policies: unchanged" in lines
    assert rows(db.dsn, "SELECT name, checksum, appliedAt FROM ingestd.migrations ORDER BY 1") == (
        before
    )
    assert _jobs(db) == jobs_before


def _jobs(db: TierDatabase) -> list[tuple[object, ...]]:
    if db.tier != "full":
        return []
    return rows(
        db.dsn,
        "SELECT job_id, proc_name, config::text FROM timescaledb_information.jobs ORDER BY 1",
    )


async def applied_copy(db: TierDatabase, tmp_path: Path) -> tuple[Path, Config]:
    """The default migrations copied under *tmp_path* and applied to *db*: (their folder, the
    config that names it), for tests that then add or edit files there."""
    files = tmp_path / "postgres"
    shutil.copytree(DEFAULT_DIR, files)
    cfg = make_config(db, {"migrations_dir": str(files)})
    await apply(cfg)
    return files, cfg


async def test_changed_migration_is_refused(tier_database: TierDatabase, tmp_path: Path) -> None:
    """Editing an applied file makes apply refuse, name the file, and run nothing."""
    db = tier_database
    files, cfg = await applied_copy(db, tmp_path)
    (files / "050_later.sql").write_text("CREATE TABLE later (id int);")
    edited = files / "002_dimensions.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking comment\n")
    with pytest.raises(SchemaError, match=r"changed since they ran: 002_dimensions\.sql"):
        await apply(cfg)
    assert relkind(db.dsn, "later") is None
    assert not rows(db.dsn, "SELECT FROM ingestd.migrations WHERE name = '050_later.sql'")


async def test_new_file_is_applied_alone(tier_database: TierDatabase, tmp_path: Path) -> None:
    """A file added after the first apply is the only one the next apply runs."""
    db = tier_database
    files, cfg = await applied_copy(db, tmp_path)
    (files / "050_later.sql").write_text("CREATE TABLE later (id int);")
    lines = await apply(cfg)
    assert [line for line in lines if line.startswith("postgres: applied ")] == [
        next(line for line in lines if "050_later.sql" in line)
    ]
    assert relkind(db.dsn, "later") == "r"


async def test_failing_migration_is_rolled_back(
    tier_database: TierDatabase, tmp_path: Path
) -> None:
    """A file whose SQL fails leaves no half-made objects and no ledger row."""
    db = tier_database
    files, cfg = await applied_copy(db, tmp_path)
    (files / "050_broken.sql").write_text("CREATE TABLE half (id int);\nSELECT no_such_fn();\n")
    with pytest.raises(SchemaError, match=r"050_broken\.sql failed \(rolled back\)"):
        await apply(cfg)
    assert relkind(db.dsn, "half") is None
    assert not rows(db.dsn, "SELECT FROM ingestd.migrations WHERE name = '050_broken.sql'")


async def test_a_recorded_tier_cannot_be_changed(make_database: Callable[[], str]) -> None:
    """A database set up as postgres refuses to be applied as apache, naming both tiers."""
    db = TierDatabase("postgres", make_database())
    await apply(make_config(db))
    other = TierDatabase("apache", db.dsn)
    with pytest.raises(SchemaError, match=r"set up as tier postgres; schema\.tier is apache"):
        await apply(make_config(other, {"tier": "apache"}))
    lines = await apply(make_config(other))  # auto keeps what was recorded
    assert "postgres: tier postgres (" in "\n".join(lines)


async def test_policy_change_reaches_the_database(tier_database: TierDatabase) -> None:
    """A new retention in the config replaces the stored policy (and TimescaleDB's job)."""
    db = tier_database
    await apply(make_config(db))
    lines = await apply(
        make_config(db, {"metrics": {"retention_days": 90, "chunk_interval_hours": 12}})
    )
    assert any(
        line.startswith("postgres: policy metrics: ") and "retention 90 days" in line
        for line in lines
    )
    if db.tier != "postgres":
        assert "postgres: metrics: chunk interval 1 day -> 12 hours" in lines
        width = rows(
            db.dsn,
            "SELECT time_interval FROM timescaledb_information.dimensions"
            " WHERE hypertable_name = 'metrics'",
        )
        assert width == [(12 * HOUR,)]
    stored = rows(
        db.dsn,
        "SELECT drop_after FROM ingestd.retention_policies WHERE hypertable_name = 'metrics'",
    )
    assert stored == [(90 * DAY,)]
    if db.tier == "full":
        conn = await connect(db.dsn, purpose="test")
        try:
            found = await job_settings(conn, "policy_retention", "metrics", ("drop_after",))
        finally:
            await conn.close()
        assert found is not None
        assert found[0] == (90 * DAY,)


async def test_retention_policies_view(tier_database: TierDatabase) -> None:
    """ingestd.retention_policies lists every table with its retention and who enforces it."""
    db = tier_database
    await apply(make_config(db))
    found = {
        (schema, table): (drop_after, by)
        for schema, table, drop_after, by in rows(
            db.dsn,
            "SELECT hypertable_schema, hypertable_name, drop_after, enforced_by"
            " FROM ingestd.retention_policies",
        )
    }
    enforcer = "timescaledb" if db.tier == "full" else "ingestd"
    assert found == {
        ("public", "metrics"): (365 * DAY, enforcer),
        ("public", "traces"): (30 * DAY, enforcer),
        ("public", "metrics_hourly"): (365 * DAY, enforcer),
        ("public", "metrics_daily"): (365 * DAY, enforcer),
        ("ingestd", "ledger"): (15 * MINUTE, "ingestd"),
    }


async def test_deep_eyes_queries_run_verbatim(tier_database: TierDatabase) -> None:
    """The document's queries run as written and return the fixture rows in the expected order."""
    db = tier_database
    await apply(make_config(db))
    now = db_now(db.dsn)
    insert_points(
        db.dsn,
        [
            (now - 2 * HOUR, "app-id", "cpu", 1.0),
            (now - 30 * MINUTE, "app-id", "cpu", 3.0),
            (now - 23 * HOUR, "other", "mem", 7.0),
            (now - 25 * HOUR, "app-id", "cpu", 100.0),  # outside the 24 hours
        ],
    )
    insert_spans(
        db.dsn,
        [
            (now - 10 * MINUTE, "app-id", "GET /a"),
            (now - 50 * MINUTE, "app-id", "GET /b"),
            (now - 5 * MINUTE, "other", "GET /c"),  # another application
            (now - 2 * HOUR, "app-id", "GET /d"),  # outside the hour
        ],
    )
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO applications (id, name) VALUES ('app-id', 'shop')")
        for name, severity, status, age_h in [
            ("low", "LOW", "ACTIVE", 3),
            ("crit-old", "CRITICAL", "ACTIVE", 2),
            ("crit-new", "CRITICAL", "ACTIVE", 1),
            ("ack", "HIGH", "ACKNOWLEDGED", 1),
            ("done", "CRITICAL", "RESOLVED", 1),
        ]:
            conn.execute(
                "INSERT INTO alerts (applicationId, name, severity, status, createdAt, resolvedAt)"
                " VALUES ('app-id', %s, %s, %s, now() - make_interval(hours => %s),"
                " CASE WHEN %s = 'RESOLVED' THEN now() END)",
                (name, severity, status, age_h, status),
            )
        results = {}
        for key, query in DEEP_EYES.items():
            if key in ("hypertables", "compression_settings", "continuous_aggregates") and (
                db.tier == "postgres"
            ):
                continue
            cur = conn.execute(query.encode())
            columns = [c.name for c in cur.description or []]
            results[key] = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]

    assert [(r["name"], r["value"]) for r in results["metrics"]] == [
        ("cpu", 3.0),
        ("cpu", 1.0),
        ("mem", 7.0),
    ]
    hourly = results["metrics_hourly"]
    assert [r["bucket"] for r in hourly] == sorted((r["bucket"] for r in hourly), reverse=True)
    assert sum(r["countvalue"] for r in hourly) == 4
    assert {r["applicationid"] for r in hourly} == {"app-id", "other"}
    assert set(hourly[0]) == {
        "bucket",
        "applicationid",
        "name",
        "avgvalue",
        "minvalue",
        "maxvalue",
        "sumvalue",
        "countvalue",
    }
    assert [r["name"] for r in results["traces"]] == ["GET /a", "GET /b"]
    assert [r["name"] for r in results["alerts"]] == ["crit-new", "crit-old", "low"]
    if db.tier == "postgres":
        return
    assert {r["hypertable_name"] for r in results["hypertables"]} >= {"metrics", "traces"}
    compressed = {r["hypertable_name"]: r["compression_enabled"] for r in results["hypertables"]}
    settings = {(r["hypertable_name"], r["attname"]) for r in results["compression_settings"]}
    caggs = {r["view_name"] for r in results["continuous_aggregates"]}
    if db.tier == "full":
        assert compressed["metrics"] is compressed["traces"] is True
        assert settings == {
            ("metrics", "applicationid"),
            ("metrics", "name"),
            ("metrics", "timestamp"),
            ("traces", "applicationid"),
            ("traces", "starttime"),
        }
        assert caggs == {"metrics_hourly", "metrics_daily"}
    else:
        assert compressed == {"metrics": False, "traces": False}
        assert settings == set()
        assert caggs == set()


async def test_users_keep_no_plain_passwords(tier_database: TierDatabase) -> None:
    """users refuses a plain password and a second account for the same email in other case."""
    db = tier_database
    await apply(make_config(db))
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (email, name, role, passwordHash) VALUES"
            " ('Ann@example.org', 'Ann', 'admin', %s)",
            ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA",),
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO users (email, name, passwordHash) VALUES ('b@x.org', 'B', 'hunter2')"
            )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO users (email, name) VALUES ('ann@EXAMPLE.org', 'Ann 2')")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def test_cli_apply_prints_steps_and_status_shows_the_tier(
    tier_database: TierDatabase, tmp_path: Path
) -> None:
    """`ingestd schema apply` prints each step and exits 0; `schema status` shows the tier."""
    db = tier_database
    path = write_config(db, tmp_path / "ingestd.yaml")
    applied = _cli("schema", "apply", "-c", str(path))
    assert applied.returncode == 0, applied.stderr
    assert "postgres: applied 001_ingestd.sql" in applied.stdout
    assert applied.stdout.rstrip().endswith("postgres: done")
    again = _cli("schema", "apply", "-c", str(path))
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    shown = _cli("schema", "status", "-c", str(path))
    assert shown.returncode == 0, shown.stderr
    tier_line = next(line for line in shown.stdout.splitlines() if line.startswith("tier"))
    assert tier_line.split()[1] == db.tier
    for relation in ("metrics", "traces", "metrics_hourly", "metrics_daily", "ingestd.ledger"):
        assert any(line.startswith(f"{relation} ") for line in shown.stdout.splitlines())


def test_cli_reports_a_refusal_with_exit_code_1(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    """A refused apply prints one clear line on stderr and exits 1."""
    db = TierDatabase("postgres", make_database())
    assert _cli("schema", "apply", "-c", str(write_config(db, tmp_path / "a.yaml"))).returncode == 0
    forced = write_config(db, tmp_path / "b.yaml", {"tier": "apache"})
    refused = _cli("schema", "apply", "-c", str(forced))
    assert refused.returncode == 1
    assert "ingestd: schema apply: this database was set up as tier postgres" in refused.stderr


async def test_apply_waits_for_the_maintenance_lock_then_says_why(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the maintenance lock, apply waits, then refuses clearly."""
    db = TierDatabase("apache", make_database())
    cfg = make_config(db)
    await apply(cfg)
    monkeypatch.setattr(command, "APPLY_LOCK_TIMEOUT_S", 1)
    with psycopg.connect(db.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (cfg.maintenance.lock_key,))
        with pytest.raises(SchemaError, match="held the maintenance lock for over 1 s"):
            await apply(cfg)
    assert "postgres: done" in await apply(cfg)


@pytest.mark.parametrize("tier", ["apache", "postgres"])
async def test_a_reader_needs_no_rights_on_the_ingestd_schema(
    tier: str, make_database: Callable[[], str], pg_admin: str
) -> None:
    """A role granted SELECT on metrics and the rollup views can read them (watermark included)."""
    db = TierDatabase(tier, make_database())
    await apply(make_config(db))
    insert_points(db.dsn, [(db_now(db.dsn) - HOUR, "app", "cpu", 2.0)])
    reader = f"t_reader_{uuid.uuid4().hex[:8]}"
    admin_dsn = psycopg.conninfo.make_conninfo(
        pg_admin, dbname=psycopg.conninfo.conninfo_to_dict(db.dsn)["dbname"]
    )
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {reader} NOLOGIN")
        try:
            conn.execute(f"GRANT SELECT ON metrics, metrics_hourly, metrics_daily TO {reader}")
            conn.execute(f"SET ROLE {reader}")
            hourly = conn.execute("SELECT sum(countValue) FROM metrics_hourly").fetchall()
            daily = conn.execute("SELECT sum(countValue) FROM metrics_daily").fetchall()
            conn.execute("RESET ROLE")
        finally:
            conn.execute("RESET ROLE")
            conn.execute(f"DROP OWNED BY {reader}")
            conn.execute(f"DROP ROLE {reader}")
    assert hourly == daily == [(1,)]
