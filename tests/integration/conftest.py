"""Fixtures for tests against the dev stack's real servers (addresses from .stack/env).

Locally a missing server skips the test with a reason; under CI (CI=true) it fails the run.
Every test session works in its own throwaway PostgreSQL database, Elasticsearch namespace and
Redis key prefix, so several sessions can share one dev stack.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from elasticsearch import Elasticsearch

ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str) -> None:
    """Fail under CI, skip locally: a test that needs *what* cannot run."""
    if ON_CI:
        pytest.fail(f"{what} (CI=true: a missing server is a failure)", pytrace=False)
    pytest.skip(what)


def make_certificate(
    directory: Path, name: str, alt_names: str = "IP:127.0.0.1"
) -> tuple[Path, Path]:
    """A self-signed certificate for *alt_names* with CN=*name*, made by the openssl command."""
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName={alt_names}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        unavailable(f"{name} is not set: run `make stack-up` and load .stack/env")
    assert value is not None
    return value


@dataclass(frozen=True)
class Stack:
    """The dev stack's addresses and a handle to stop/start one server (outage tests)."""

    pg_dsn: str
    pg_admin_dsn: str
    es_url: str
    redis_url: str
    script: str

    def stop(self, server: str) -> None:
        subprocess.run([self.script, "stop", server], check=True, capture_output=True)

    def start(self, server: str) -> None:
        subprocess.run([self.script, "start", server], check=True, capture_output=True)


@pytest.fixture(scope="session")
def stack() -> Stack:
    return Stack(
        pg_dsn=env("INGESTD_PG_DSN"),
        pg_admin_dsn=env("INGESTD_PG_ADMIN_DSN"),
        es_url=env("INGESTD_ES_URL"),
        redis_url=env("INGESTD_REDIS_URL"),
        script=env("INGESTD_STACK_SCRIPT"),
    )


@pytest.fixture(scope="session")
def pg_admin(stack: Stack) -> str:
    try:
        with psycopg.connect(stack.pg_admin_dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL does not answer at {stack.pg_admin_dsn}: {exc}")
    return stack.pg_admin_dsn


def _dsn_for(base: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(base, dbname=dbname)


@pytest.fixture(scope="session")
def make_database(pg_admin: str, stack: Stack) -> Iterator[Callable[[], str]]:
    """A factory of empty databases owned by the ingestd role; all dropped at the end."""
    created: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER ingestd')
        created.append(name)
        return _dsn_for(stack.pg_dsn, name)

    yield make
    try:
        with psycopg.connect(pg_admin, autocommit=True, connect_timeout=5) as conn:
            for name in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.OperationalError:
        pass  # the server was stopped by an outage test and not restarted; nothing to clean


@pytest.fixture
def database(make_database: Callable[[], str]) -> str:
    """DSN of a fresh, empty database for one test."""
    return make_database()


@pytest.fixture(scope="session")
def es(stack: Stack) -> Iterator[Elasticsearch]:
    client = Elasticsearch(stack.es_url, request_timeout=30)
    try:
        health = client.cluster.health()
    except Exception as exc:  # the client raises several transport error types
        unavailable(f"Elasticsearch does not answer at {stack.es_url}: {exc}")
    assert health["status"] in ("green", "yellow"), health
    yield client
    client.close()


# The integ-test Elasticsearch has no data-streams module, so a data stream, once created,
# cannot be deleted there. Tests therefore write into a fixed, small set of data streams and
# tell their records apart by a unique run id (see `run_id`).
ES_TEST_NAMESPACE = "ingestdtest"


@pytest.fixture
def es_namespace(es: Elasticsearch) -> str:
    """The data stream namespace tests write to (shared; filter by `run_id`)."""
    return ES_TEST_NAMESPACE


@pytest.fixture
def run_id() -> str:
    """A unique tag for this test's records, to find exactly them among shared data."""
    return uuid.uuid4().hex


@pytest.fixture(scope="session")
def redis_client(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis does not answer at {stack.redis_url}: {exc}")
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


# -- schema tiers -------------------------------------------------------------------------------
# The dev stack's PostgreSQL gives two tiers (apache: TimescaleDB without TSL; postgres: a
# database that never creates the extension). A full TimescaleDB (with TSL) is not part of the
# stack or CI; when INGESTD_PG_FULL_DSN points at one, the same tests also run on tier full.
FULL_DSN_ENV = "INGESTD_PG_FULL_DSN"
SCHEMA_TIERS = ["apache", "postgres", *(["full"] if os.environ.get(FULL_DSN_ENV) else [])]


@dataclass(frozen=True)
class TierDatabase:
    """A fresh, empty database meant to become *tier* (`schema.tier` forces postgres only)."""

    tier: str
    dsn: str

    @property
    def config_tier(self) -> str:
        # apache and full are detected (auto); postgres must be asked for on a TimescaleDB server.
        return "postgres" if self.tier == "postgres" else "auto"


@pytest.fixture(scope="session")
def make_full_database() -> Iterator[Callable[[], str]]:
    """A factory of empty databases on the full-tier server of INGESTD_PG_FULL_DSN."""
    base = os.environ.get(FULL_DSN_ENV, "")
    created: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _dsn_for(base, name)

    yield make
    if created:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            for name in created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=SCHEMA_TIERS)
def tier_database(request: pytest.FixtureRequest, make_database: Callable[[], str]) -> TierDatabase:
    """A fresh database for each schema tier this machine has (see SCHEMA_TIERS)."""
    if request.param == "full":
        make_full: Callable[[], str] = request.getfixturevalue("make_full_database")
        return TierDatabase("full", make_full())
    return TierDatabase(request.param, make_database())


@pytest.fixture
def timescale_db(database: str, stack: Stack) -> str:
    """DSN of a fresh database holding the design.md tables (made by `ingestd schema apply`)."""
    from tests.harness import create_design_tables

    create_design_tables(database, stack.pg_admin_dsn)
    return database
