"""DATABASE_URL (Prisma's) as the default owner DSN: Prisma-only parameters dropped."""

from __future__ import annotations

import psycopg
import pytest

from ingestd.config import TimescaleSinkConfig
from ingestd.database_url import libpq_dsn, owner_dsn

PRISMA_URL = (
    "postgresql://deep:p%40ss@db.internal:6543/deep_eyes"
    "?schema=public&connection_limit=5&sslmode=require&pool_timeout=10&connect_timeout=7"
)


def test_prisma_only_parameters_are_dropped_and_libpq_ones_kept() -> None:
    """schema, connection_limit, pool_timeout go; sslmode, connect_timeout stay; libpq parses it."""
    dsn, dropped = libpq_dsn(PRISMA_URL)
    assert dropped == ["schema", "connection_limit", "pool_timeout"]
    parsed = psycopg.conninfo.conninfo_to_dict(dsn)
    assert parsed == {
        "user": "deep",
        "password": "p@ss",
        "host": "db.internal",
        "port": "6543",
        "dbname": "deep_eyes",
        "sslmode": "require",
        "connect_timeout": "7",
    }


def test_not_a_postgres_url_is_refused() -> None:
    """A mysql:// or bare string says what is expected."""
    with pytest.raises(ValueError, match="postgresql://"):
        libpq_dsn("mysql://x@y/z")


def test_config_dsn_wins_then_database_url_then_default() -> None:
    """An explicit sinks.timescale.dsn wins; else DATABASE_URL; else the built-in default."""
    env = {"DATABASE_URL": PRISMA_URL}
    explicit = TimescaleSinkConfig(dsn="postgresql://a@b/c")
    assert owner_dsn(explicit, env) == "postgresql://a@b/c"
    assert "connection_limit" not in owner_dsn(TimescaleSinkConfig(), env)
    assert owner_dsn(TimescaleSinkConfig(), env).startswith("postgresql://deep:p%40ss@db.internal")
    assert owner_dsn(TimescaleSinkConfig(), {}) == TimescaleSinkConfig().dsn
