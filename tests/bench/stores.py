"""Where stored items are counted: throwaway PostgreSQL databases and Elasticsearch data streams.

Throughput is what the servers hold, never what ingestd says it wrote: `count(*)` of the table
and `_count` of the data stream after a refresh. Each benchmark run makes its own databases (by
`ingestd schema apply`, as the tests do) and writes logs to data streams of its own namespace,
which are rolled over and emptied afterwards (the integ-test Elasticsearch cannot delete a data
stream, only its backing indices that are not the write index).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import psycopg
import yaml
from elasticsearch import ApiError, Elasticsearch, NotFoundError

from ingestd import config as ingestd_config
from ingestd.schema.elasticsearch import apply_templates
from tests.harness import create_design_tables

# Unique columns per table: the load generator's item id (tests/bench/payloads.py).
ID_COLUMN = {"traces": "spanid", "metrics": "timeunixnano"}


@dataclass
class Databases:
    """Fresh databases with the ingestd schema, dropped by `drop_all`."""

    admin_dsn: str
    base_dsn: str
    created: list[str] = field(default_factory=list)

    def create(self, purpose: str) -> str:
        name = f"bench_{purpose}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER ingestd')
        self.created.append(name)
        dsn = psycopg.conninfo.make_conninfo(self.base_dsn, dbname=name)
        create_design_tables(dsn, self.admin_dsn)
        return dsn

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


def wait_for_servers(pg_dsn: str, es_url: str, redis_url: str, timeout_s: float = 180) -> float:
    """Block until PostgreSQL, Elasticsearch and Redis all answer; return the seconds waited.

    Other people's outage tests stop and start the shared dev stack's servers; a section that
    starts during such an outage would measure the outage.
    """
    import redis

    began = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - began < timeout_s:
        try:
            with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            with Elasticsearch(es_url, request_timeout=3) as es:
                if es.cluster.health()["status"] == "red":
                    raise RuntimeError("Elasticsearch cluster health is red")
            with redis.Redis.from_url(redis_url, socket_timeout=3) as client:
                client.ping()
            return time.monotonic() - began
        except Exception as exc:  # any of them down: wait and ask again
            last = exc
            time.sleep(2.0)
    raise RuntimeError(f"dev stack not answering after {timeout_s:.0f} s: {last}")


def count_rows(dsn: str, table: str) -> tuple[int, float]:
    """(rows in *table*, wall-clock time the count reflects: the query's midpoint)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        began = time.time()
        (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,)
        return int(count), (began + time.time()) / 2


def distinct_ids(dsn: str, table: str) -> tuple[int, int]:
    """(rows, distinct item ids) of *table*: equal when nothing was stored twice."""
    column = ID_COLUMN[table]
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT {column}) FROM {table}").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


class LogStreams:
    """The benchmark's logs data streams: `logs-<dataset>.otel-<namespace>`."""

    def __init__(self, es_url: str, namespace: str) -> None:
        self.es_url = es_url
        self.es = Elasticsearch(es_url, request_timeout=60)
        self.namespace = namespace

    def stream(self, dataset: str) -> str:
        return f"logs-{dataset}.otel-{self.namespace}"

    def apply_templates(self) -> None:
        """ingestd's index templates (`ingestd schema apply` installs the same)."""
        cfg = ingestd_config.parse(
            yaml.safe_dump({"sinks": {"elasticsearch": {"urls": [self.es_url]}}}),
            environ={},
        )
        asyncio.run(apply_templates(cfg.sinks.elasticsearch))

    def count(self, dataset: str) -> tuple[int, float]:
        """(documents in the data stream after a refresh, the time the count reflects)."""
        name = self.stream(dataset)
        began = time.time()
        if not self.es.indices.exists(index=name):
            return 0, began
        self.es.indices.refresh(index=name)
        counted = int(self.es.count(index=name)["count"])
        return counted, (began + time.time()) / 2

    def empty(self, dataset: str) -> None:
        """Roll the stream over and delete every backing index but the new, empty write index."""
        name = self.stream(dataset)
        try:
            resolved = self.es.indices.resolve_index(name=name, expand_wildcards="all")
        except NotFoundError:
            return
        if not resolved["data_streams"]:
            return
        self.es.indices.rollover(alias=name)
        resolved = self.es.indices.resolve_index(name=name, expand_wildcards="all")
        backing = sorted(resolved["data_streams"][0]["backing_indices"])
        for index in backing[:-1]:
            self.es.indices.delete(index=index)

    def drop(self, dataset: str) -> None:
        """Delete the data stream (a run's namespace is its own); where the data stream API is
        refused (the dev stack's Elasticsearch answers 405), empty it: one empty index stays."""
        try:
            self.es.indices.delete_data_stream(name=self.stream(dataset))
        except NotFoundError:
            return
        except ApiError:
            self.empty(dataset)

    def close(self) -> None:
        self.es.close()


def server_cpu(admin_dsn: str, dsn: str) -> dict[int, tuple[float, float]]:
    """Per PostgreSQL server process connected to *dsn*'s database: (CPU-seconds so far,
    seconds so far spent runnable but waiting for a CPU, from /proc/<pid>/schedstat)."""
    import psutil

    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    out: dict[int, tuple[float, float]] = {}
    for (pid,) in rows:
        try:
            times = psutil.Process(pid).cpu_times()
            with open(f"/proc/{pid}/schedstat") as f:
                waited_ns = int(f.read().split()[1])
        except (psutil.NoSuchProcess, OSError):
            continue
        out[pid] = (times.user + times.system, waited_ns / 1e9)
    return out


def cpu_between(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]], field: int = 0
) -> float:
    """Seconds of *field* (0: CPU, 1: waiting for a CPU) the processes seen at both samples
    spent between them."""
    return sum(after[pid][field] - before[pid][field] for pid in after.keys() & before.keys())
