"""What a chaos run works with: the dev stack, proxies in front of it, and `ingestd run`.

ingestd always talks to PostgreSQL, Elasticsearch and Redis through a `tests.proxy.Proxy` each,
so a fault can slow or cut any of them; its receivers listen on fixed free ports, so clients
keep their address across a kill -9 and a restart. The run writes into a fresh database (made
here, schema applied, dropped at the end) and the shared Elasticsearch test namespace, and tells
its records apart by `chaos.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import yaml
from elasticsearch import Elasticsearch

from ingestd import config as config_module
from ingestd.schema import command
from tests.harness import IngestdProcess, deep_merge, free_port
from tests.proxy import Proxy

ES_NAMESPACE = "ingestdtest"  # tests/integration/conftest.py: the shared test namespace
LOGS_INDEX = f"logs-*-{ES_NAMESPACE}"


@dataclass(frozen=True)
class StackAddresses:
    pg_dsn: str
    pg_admin_dsn: str
    es_url: str
    redis_url: str
    script: str

    @classmethod
    def from_env(cls) -> StackAddresses:
        names = (
            "INGESTD_PG_DSN",
            "INGESTD_PG_ADMIN_DSN",
            "INGESTD_ES_URL",
            "INGESTD_REDIS_URL",
            "INGESTD_STACK_SCRIPT",
        )
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise SystemExit(
                f"chaos: {', '.join(missing)} not set: run `make stack-up` and load .stack/env"
            )
        return cls(*(os.environ[n] for n in names))

    def stack(self, action: str, server: str) -> None:
        """`stack.sh stop|start SERVER` (shared servers: keep outages short)."""
        subprocess.run([self.script, action, server], check=True, capture_output=True, timeout=180)


def _host_port(url: str, default: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default


@dataclass
class Environment:
    """One chaos run: its database, proxies, ports and the ingestd process of the fault."""

    stack: StackAddresses
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ingestd-chaos-")))
    dsn: str = ""
    dbname: str = ""
    pg_proxy: Proxy | None = None
    es_proxy: Proxy | None = None
    redis_proxy: Proxy | None = None
    grpc_port: int = 0
    http_port: int = 0
    daemon: IngestdProcess | None = None
    # Every daemon started since `forget_daemons`, for their log events.
    daemons: list[IngestdProcess] = field(default_factory=list)
    # Log events of those daemons that mention an exception (a bug's first trace).
    exceptions: list[str] = field(default_factory=list)

    # -- setup ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.dbname = f"chaos_{self.run_id}"
        with psycopg.connect(self.stack.pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}" OWNER ingestd')
        self.dsn = psycopg.conninfo.make_conninfo(self.stack.pg_dsn, dbname=self.dbname)
        await asyncio.to_thread(self.apply_schema, self.dsn, self.stack.es_url)
        pg_host, pg_port = _pg_host_port(self.stack.pg_dsn)
        self.pg_proxy = Proxy(pg_host, pg_port)
        self.es_proxy = Proxy(*_host_port(self.stack.es_url, 9200), postgres=False)
        self.redis_proxy = Proxy(*_host_port(self.stack.redis_url, 6379), postgres=False)
        for proxy in (self.pg_proxy, self.es_proxy, self.redis_proxy):
            await proxy.start()

    def apply_schema(self, dsn: str | None, es_url: str | None) -> None:
        """`ingestd schema apply` for the database of *dsn* and/or the ES at *es_url*."""
        if dsn is not None:
            admin = psycopg.conninfo.make_conninfo(
                self.stack.pg_admin_dsn, dbname=psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
            )
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        sinks: dict[str, Any] = {
            "timescale": {"dsn": dsn} if dsn else {"enabled": False},
            "elasticsearch": {"urls": [es_url], "logs_namespace": ES_NAMESPACE}
            if es_url
            else {"enabled": False},
        }
        cfg = config_module.parse(yaml.safe_dump({"sinks": sinks}), environ={})
        lines: list[str] = []
        asyncio.run(command.apply(cfg, lines.append))

    async def close(self) -> None:
        await self.stop_daemon(kill=True)
        for proxy in (self.pg_proxy, self.es_proxy, self.redis_proxy):
            if proxy is not None:
                await proxy.stop()
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.stack.pg_admin_dsn, autocommit=True, connect_timeout=10) as c,
        ):
            c.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the daemon ----------------------------------------------------------------------------

    def daemon_config(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.pg_proxy is not None
        assert self.es_proxy is not None
        assert self.redis_proxy is not None
        redis_db = urlsplit(self.stack.redis_url).path or "/0"
        base: dict[str, Any] = {
            "receivers": {
                "grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"},
                "http": {"endpoint": f"127.0.0.1:{self.http_port}"},
            },
            # Fail fast so that clients see faults within seconds (they retry).
            "ingest": {"ack": "committed", "ack_timeout_s": 5.0, "enqueue_timeout_s": 1.0},
            "sinks": {
                "timescale": {
                    "dsn": self.pg_proxy.dsn(self.dsn),
                    "pool": {"min_size": 1, "max_size": 4, "connect_timeout_s": 3},
                    "batch": {"flush_interval_s": 0.1},
                    "retry": {"initial_backoff_s": 0.1, "max_backoff_s": 1, "max_elapsed_s": 20},
                },
                "elasticsearch": {
                    "urls": [f"http://127.0.0.1:{self.es_proxy.port}"],
                    "logs_namespace": ES_NAMESPACE,
                    "request_timeout_s": 10,
                    "batch": {"flush_interval_s": 0.1},
                    "retry": {"initial_backoff_s": 0.1, "max_backoff_s": 1, "max_elapsed_s": 20},
                },
            },
            "redis": {
                "url": f"redis://127.0.0.1:{self.redis_proxy.port}{redis_db}",
                "key_prefix": f"chaos{self.run_id}:",
            },
            # The run checks what is stored right after the load; maintenance would only add
            # DDL (partitions, retention) to the faults' timing.
            "maintenance": {"enabled": False},
            "admin": {"endpoint": "127.0.0.1:0", "check_interval_s": 0.5},
            "telemetry": {"log_format": "json", "log_level": "info"},
            "shutdown": {"grace_s": 15},
        }
        return deep_merge(base, overrides or {})

    async def start_daemon(self, overrides: dict[str, Any] | None = None) -> IngestdProcess:
        """Start `ingestd run` and wait until both receivers listen."""
        if not self.grpc_port:
            self.grpc_port, self.http_port = free_port(), free_port()
        workdir = self.workdir / f"daemon-{time.monotonic_ns()}"
        workdir.mkdir()
        daemon = IngestdProcess(self.daemon_config(overrides), workdir)
        self.daemon = daemon
        self.daemons.append(daemon)
        await asyncio.to_thread(daemon.wait_for_event, _is("grpc_listening"), 60.0)
        await asyncio.to_thread(daemon.wait_for_event, _is("http_receiver_listening"), 60.0)
        return daemon

    def warnings(self) -> dict[str, int]:
        """Warning and error log events of the daemons since `daemons` was cleared, by name;
        `es_429` counts those that quote an Elasticsearch 429 / rejected execution."""
        counts: dict[str, int] = {}
        for daemon in self.daemons:
            for event in list(daemon.events):
                if event.get("level") not in ("warning", "error", "critical"):
                    continue
                name = str(event.get("event", "?"))[:60]
                counts[name] = counts.get(name, 0) + 1
                text = str(event)
                if (
                    "exception" in event or "Traceback" in text or "never retrieved" in text
                ) and len(self.exceptions) < 5:
                    self.exceptions.append(text[:4000])
                if "429" in text or "rejected_execution" in text:
                    counts["es_429"] = counts.get("es_429", 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    async def stop_daemon(self, *, kill: bool = False) -> int | None:
        """SIGTERM (drain) or SIGKILL the daemon; its exit code."""
        daemon, self.daemon = self.daemon, None
        if daemon is None:
            return None
        if kill:
            await asyncio.to_thread(daemon.kill)
            return daemon.proc.returncode
        return await asyncio.to_thread(daemon.terminate, 60.0)

    def kill9(self) -> None:
        """kill -9 the whole daemon (its process group member we started)."""
        assert self.daemon is not None
        os.kill(self.daemon.proc.pid, signal.SIGKILL)
        self.daemon.proc.wait(timeout=10)

    # -- reading back --------------------------------------------------------------------------

    def stored(
        self, run_id: str, *, dsn: str | None = None, es_url: str | None = None
    ) -> dict[str, int]:
        """seq -> copies stored, over the traces and metrics tables and the logs data streams."""
        counts: dict[str, int] = {}
        with _connect_patiently(dsn or self.dsn) as conn:
            for table in ("traces", "metrics"):
                rows = conn.execute(
                    f"SELECT attributes->>'chaos.seq', count(*) FROM {table} "
                    "WHERE attributes->>'chaos.run' = %s GROUP BY 1",
                    (run_id,),
                ).fetchall()
                for seq, n in rows:
                    counts[seq] = counts.get(seq, 0) + n
        for seq, n in es_seq_counts(es_url or self.stack.es_url, run_id).items():
            counts[seq] = counts.get(seq, 0) + n
        return counts


def _connect_patiently(dsn: str, timeout_s: float = 90.0) -> psycopg.Connection[Any]:
    """A connection, waiting out a restart of the shared server by another test run."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return psycopg.connect(dsn, connect_timeout=5)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def es_seq_counts(es_url: str, run_id: str) -> dict[str, int]:
    """seq -> documents in the logs data streams of the test namespace, for one run."""
    client = Elasticsearch(es_url, request_timeout=60)
    try:
        client.indices.refresh(index=LOGS_INDEX, ignore_unavailable=True, allow_no_indices=True)
        counts: dict[str, int] = {}
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {
                "size": 5000,
                "sources": [{"seq": {"terms": {"field": "attributes.chaos.seq"}}}],
            }
            if after:
                composite["after"] = after
            answer = client.search(
                index=LOGS_INDEX,
                size=0,
                query={"term": {"attributes.chaos.run": run_id}},
                aggs={"seqs": {"composite": composite}},
                ignore_unavailable=True,
                allow_no_indices=True,
            )
            agg = answer.get("aggregations", {}).get("seqs")
            if not agg or not agg["buckets"]:
                return counts
            for bucket in agg["buckets"]:
                counts[bucket["key"]["seq"]] = bucket["doc_count"]
            after = agg.get("after_key")
            if after is None:
                return counts
    finally:
        client.close()


def es_copies(es_url: str, run_id: str, seqs: list[str]) -> list[str]:
    """Where the documents of *seqs* are: "seq index/_id" per copy (for a duplicate's report)."""
    client = Elasticsearch(es_url, request_timeout=60)
    try:
        answer = client.search(
            index=LOGS_INDEX,
            size=100,
            query={
                "bool": {
                    "filter": [
                        {"term": {"attributes.chaos.run": run_id}},
                        {"terms": {"attributes.chaos.seq": seqs}},
                    ]
                }
            },
            source=False,
            docvalue_fields=[{"field": "attributes.chaos.seq"}],
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        return sorted(
            f"{hit['fields']['attributes.chaos.seq'][0]} {hit['_index']}/{hit['_id']}"
            for hit in answer["hits"]["hits"]
        )
    finally:
        client.close()


def _pg_host_port(dsn: str) -> tuple[str, int]:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)


def _is(name: str) -> Any:
    return lambda event: event.get("event") == name


@contextlib.asynccontextmanager
async def environment(stack: StackAddresses) -> AsyncIterator[Environment]:
    env = Environment(stack)
    await env.start()
    try:
        yield env
    finally:
        await env.close()
