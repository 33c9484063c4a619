"""The design.md tables in a fresh test database, made by `ingestd schema apply`.

`create_design_tables` is the one place the core tests get their schema from. It used to hold
a copy of the DDL until the schema command landed; it now runs that command (apache tier on
the dev stack), so the tests write into exactly the tables, indexes and hypertables a real
deployment has.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import psycopg
import yaml

from ingestd import config
from ingestd.schema import command


def create_design_tables(dsn: str, admin_dsn: str) -> None:
    """Run `ingestd schema apply` against the (fresh, empty) database of *dsn*.

    The TimescaleDB extension is created first through *admin_dsn* (a superuser) pointed at
    the same database, so the command works whatever rights the ingestd role has.
    """
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin = psycopg.conninfo.make_conninfo(admin_dsn, dbname=dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    cfg = config.parse(
        yaml.safe_dump({"sinks": {"timescale": {"dsn": dsn}, "elasticsearch": {"enabled": False}}}),
        environ={},
    )
    lines: list[str] = []
    # The caller may be inside a running event loop (an async fixture or test).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, command.apply(cfg, lines.append)).result()
