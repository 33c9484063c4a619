"""The faults, each injected under steady load, then healed (always, in `finally`).

A fault is a coroutine `inject(run)` that breaks something for about `run.duration_s` and puts
it back; `prepare` (optional) builds what the fault needs before ingestd starts (a tiny
Elasticsearch node, a database on a small filesystem) and returns config overrides; `cleanup`
removes it. `promise=False` marks a fault outside the exactly-once promise (ack: accepted and
a crash): its losses are reported, not counted as violations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from tests.chaos.environment import Environment
from tests.chaos.ledger import Ledger
from tests.chaos.load import LoadConfig
from tests.chaos.tiny_es import TinyElasticsearch, Unavailable
from tests.proxy import Proxy


class Skip(Exception):
    """The fault cannot run on this build or machine; the reason is reported."""


@dataclass
class FaultRun:
    """One fault's run: where it writes, its ledger, and what it observed."""

    env: Environment
    ledger: Ledger
    duration_s: float
    load: LoadConfig
    overrides: dict[str, Any] = field(default_factory=dict)
    dsn: str | None = None  # read back from here instead of the run's database
    es_url: str | None = None  # read back from here instead of the stack's Elasticsearch
    notes: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


Step = Callable[[FaultRun], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    inject: Step
    prepare: Step | None = None
    cleanup: Step | None = None
    short: bool = False  # part of the reduced set that runs inside `make test`
    promise: bool = True
    skewed: bool = False
    config: dict[str, Any] = field(default_factory=dict)  # ingestd config overrides


# -- the daemon ---------------------------------------------------------------------------------


async def kill_daemon(run: FaultRun) -> None:
    """kill -9 the whole daemon twice, restarting it after a second each time."""
    kills = 0
    for _ in range(2):
        await asyncio.sleep(run.duration_s / 3)
        run.env.kill9()
        kills += 1
        await asyncio.sleep(1.0)
        await run.env.start_daemon(run.overrides)
    run.notes["kills"] = kills


async def prepare_workers(run: FaultRun) -> None:
    """Two worker processes under the supervisor (the `workers` key)."""
    run.overrides.update({"workers": 2})


async def kill_worker(run: FaultRun) -> None:
    """kill -9 one worker process; the supervisor must replace it, nothing acked is lost."""
    assert run.env.daemon is not None
    await asyncio.sleep(run.duration_s / 3)
    children = _children(run.env.daemon.proc.pid)
    if not children:
        raise Skip("no worker processes under the daemon")
    victim = random.choice(children)
    with contextlib.suppress(ProcessLookupError):
        os.kill(victim, signal.SIGKILL)
    run.notes["killed_worker"] = victim
    await asyncio.sleep(run.duration_s / 2)
    run.notes["workers_after"] = len(_children(run.env.daemon.proc.pid))


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


# -- servers stopped ----------------------------------------------------------------------------


def server_stopped(server: str, outage_s: float) -> Step:
    async def inject(run: FaultRun) -> None:
        await asyncio.sleep(1.0)
        began = time.monotonic()
        try:
            await asyncio.to_thread(run.env.stack.stack, "stop", server)
            await asyncio.sleep(outage_s)
        finally:
            await asyncio.to_thread(run.env.stack.stack, "start", server)
        run.notes["outage_s"] = round(time.monotonic() - began, 1)

    return inject


# -- servers slowed and cut through the proxies ---------------------------------------------------


def _proxy(run: FaultRun, server: str) -> Proxy:
    proxy = {
        "postgres": run.env.pg_proxy,
        "elasticsearch": run.env.es_proxy,
        "redis": run.env.redis_proxy,
    }[server]
    assert proxy is not None
    return proxy


def slowed(server: str, latency_s: float) -> Step:
    async def inject(run: FaultRun) -> None:
        proxy = _proxy(run, server)
        proxy.latency_s = latency_s
        try:
            await asyncio.sleep(run.duration_s)
        finally:
            proxy.latency_s = 0.0
        run.notes["latency_ms_per_chunk"] = int(latency_s * 1000)

    return inject


def cut(server: str) -> Step:
    async def inject(run: FaultRun) -> None:
        """Reset every connection at random moments; PostgreSQL also around COMMIT."""
        proxy = _proxy(run, server)
        # A little latency keeps requests (bulks, COPYs) in flight, so cuts land mid-request.
        proxy.latency_s = 0.01
        cuts = commit_cuts = 0
        deadline = time.monotonic() + run.duration_s
        try:
            if server == "postgres":
                for when in ("during", "after", "before", "during", "after"):
                    done = proxy.cut_at_commit(when)  # type: ignore[arg-type]
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), timeout=run.duration_s / 6)
                        commit_cuts += 1
            while time.monotonic() < deadline:
                await asyncio.sleep(random.uniform(0.2, 1.2))
                cuts += await proxy.cut_all()
        finally:
            proxy.latency_s = 0.0
            proxy.cut_at_commit("before", times=0)
        run.notes["connections_cut"] = cuts
        if server == "postgres":
            run.notes["commit_cuts"] = commit_cuts

    return inject


def rollover_between_attempts(cycles: int) -> Step:
    async def inject(run: FaultRun) -> None:
        """Bulks held in the proxy, the logs data streams rolled over, the held answers cut:
        each retry comes after a rollover, so only a lookup in the old backing index keeps it
        from storing the records a second time."""
        proxy = _proxy(run, "elasticsearch")
        es_url = run.env.stack.es_url
        # Each chunk waits this long each way: a bulk is indexed while its answer is held.
        proxy.latency_s = 0.4
        rollovers = cuts = 0
        try:
            for _ in range(cycles):
                await asyncio.sleep(run.duration_s / (cycles + 1))
                for stream in await asyncio.to_thread(_logs_streams, es_url):
                    await asyncio.to_thread(_es_post, es_url, f"/{stream}/_rollover")
                    rollovers += 1
                cuts += await proxy.cut_all()
        finally:
            proxy.latency_s = 0.0
        run.notes["rollovers"] = rollovers
        run.notes["connections_cut"] = cuts

    return inject


# The rollover fault's logs go to a data stream of their own: rolling over the shared test
# stream would make tests that post fixed documents find them twice.
ROLLOVER_DATASET = "chaosrollover"


def _backing_indices(es_url: str, stream: str) -> list[str]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{es_url}/_resolve/index/{stream}", timeout=10) as reply:
            streams = json.loads(reply.read())["data_streams"]
    except urllib.error.HTTPError:
        return []
    return [name for d in streams for name in d["backing_indices"]]


def _logs_streams(es_url: str) -> list[str]:
    """The data stream the load writes to in this fault (created by its first bulk)."""
    from tests.chaos.environment import ES_NAMESPACE

    stream = f"logs-{ROLLOVER_DATASET}.otel-{ES_NAMESPACE}"
    return [stream] if _backing_indices(es_url, stream) else []


async def cleanup_rollover(run: FaultRun) -> None:
    """Delete the backing indices the fault rolled away from (the write index stays)."""
    import urllib.request

    es_url = run.env.stack.es_url
    for stream in await asyncio.to_thread(_logs_streams, es_url):
        for index in (await asyncio.to_thread(_backing_indices, es_url, stream))[:-1]:
            request = urllib.request.Request(f"{es_url}/{index}", method="DELETE")
            await asyncio.to_thread(urllib.request.urlopen, request, None, 30)


def _es_post(es_url: str, path: str) -> None:
    import urllib.request

    request = urllib.request.Request(f"{es_url}{path}", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=30) as reply:
        reply.read()


# -- PostgreSQL: full disk, read-only -----------------------------------------------------------


async def prepare_disk(run: FaultRun) -> None:
    """A database whose tablespace is a small tmpfs, filled up to nearly full by the schema."""
    env = run.env
    mount = Path(f"/tmp/ingestd-chaos-ts-{env.run_id}")
    await asyncio.to_thread(mount.mkdir, parents=True, exist_ok=True)
    _sh("mount", "-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs", str(mount))
    run.state["mount"] = mount
    _sh("chown", "postgres:postgres", str(mount))
    space, db = f"chaos_{env.run_id}", f"chaos_{env.run_id}_disk"
    with psycopg.connect(env.stack.pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLESPACE {space} LOCATION '{mount}'")
        run.state["tablespace"] = space
        conn.execute(f'CREATE DATABASE "{db}" OWNER ingestd TABLESPACE {space}')
        run.state["database"] = db
    dsn = psycopg.conninfo.make_conninfo(env.stack.pg_dsn, dbname=db)
    await asyncio.to_thread(env.apply_schema, dsn, None)
    assert env.pg_proxy is not None
    run.overrides = {"sinks": {"timescale": {"dsn": env.pg_proxy.dsn(dsn)}}}
    run.dsn = dsn


async def disk_full(run: FaultRun) -> None:
    """Shrink the tablespace's filesystem to what it holds plus 1 MB; grow it back later."""
    mount: Path = run.state["mount"]
    await asyncio.sleep(1.0)
    used_kb = int(_sh("df", "--output=used", "-k", str(mount)).split()[-1])
    _sh("mount", "-o", f"remount,size={used_kb + 1024}k", str(mount))
    run.notes["tablespace_kb"] = used_kb + 1024
    try:
        await asyncio.sleep(run.duration_s)
        run.notes["free_kb_at_end"] = int(_sh("df", "--output=avail", "-k", str(mount)).split()[-1])
    finally:
        _sh("mount", "-o", "remount,size=256m", str(mount))


async def cleanup_disk(run: FaultRun) -> None:
    env = run.env
    with psycopg.connect(env.stack.pg_admin_dsn, autocommit=True) as conn:
        if "database" in run.state:
            conn.execute(f'DROP DATABASE IF EXISTS "{run.state["database"]}" WITH (FORCE)')
        if "tablespace" in run.state:
            conn.execute(f"DROP TABLESPACE IF EXISTS {run.state['tablespace']}")
    if "mount" in run.state:
        await asyncio.to_thread(_unmount, run.state["mount"])


def _unmount(mount: Path) -> None:
    subprocess.run(["umount", str(mount)], check=False)
    with contextlib.suppress(OSError):
        mount.rmdir()


async def read_only(run: FaultRun) -> None:
    """The database turns read-only (a failover's demoted primary), then writable again."""
    env = run.env
    await asyncio.sleep(1.0)
    try:
        _pg_admin(env, f'ALTER DATABASE "{env.dbname}" SET default_transaction_read_only = on')
        run.notes["sessions_reset"] = _terminate_sessions(env)
        await asyncio.sleep(run.duration_s)
    finally:
        _pg_admin(env, f'ALTER DATABASE "{env.dbname}" RESET default_transaction_read_only')
        _terminate_sessions(env)


def _pg_admin(env: Environment, sql: str) -> None:
    with psycopg.connect(env.stack.pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def _terminate_sessions(env: Environment) -> int:
    with psycopg.connect(env.stack.pg_admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (env.dbname,),
        ).fetchall()
    return len(rows)


def _sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


# -- Elasticsearch answering 429 -----------------------------------------------------------------


async def prepare_tiny_es(run: FaultRun) -> None:
    try:
        node = await asyncio.to_thread(TinyElasticsearch.find)
        await asyncio.to_thread(node.start)
    except Unavailable as exc:
        raise Skip(str(exc)) from exc
    run.state["tiny_es"] = node
    await asyncio.to_thread(run.env.apply_schema, None, node.url)
    run.overrides = {"sinks": {"elasticsearch": {"urls": [node.url]}}}
    run.es_url = node.url


async def es_overloaded(run: FaultRun) -> None:
    """Its own load: concurrent bulk writers keep the one-slot write queue full."""
    node: TinyElasticsearch = run.state["tiny_es"]
    statuses: dict[str, int] = {}
    stop = asyncio.Event()

    async def hammer(session: aiohttp.ClientSession, n: int) -> None:
        lines = b"".join(
            b'{"index":{}}\n{"noise":%d,"pad":"%s"}\n' % (i, b"x" * 200) for i in range(300)
        )
        while not stop.is_set():
            try:
                async with session.post(
                    f"{node.url}/chaos-noise-{n}/_bulk",
                    data=lines,
                    headers={"Content-Type": "application/x-ndjson"},
                ) as reply:
                    body = await reply.read()
                    key = str(reply.status)
                    if reply.status == 200 and b"es_rejected_execution_exception" in body:
                        key = "200-items-429"
                    statuses[key] = statuses.get(key, 0) + 1
            except aiohttp.ClientError:
                statuses["conn"] = statuses.get("conn", 0) + 1

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(hammer(session, n)) for n in range(6)]
        try:
            await asyncio.sleep(run.duration_s)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    run.notes["noise_bulk_answers"] = statuses
    run.notes["node_write_rejections"] = await asyncio.to_thread(_es_rejections, node.url)


def _es_rejections(url: str) -> int:
    import json
    import urllib.request

    path = "/_nodes/stats/thread_pool?filter_path=nodes.*.thread_pool.write"
    with urllib.request.urlopen(url + path, timeout=10) as reply:
        stats = json.loads(reply.read())
    return sum(n["thread_pool"]["write"]["rejected"] for n in stats["nodes"].values())


async def cleanup_tiny_es(run: FaultRun) -> None:
    node = run.state.get("tiny_es")
    if node is not None:
        await asyncio.to_thread(node.stop)


# -- no fault: the load itself is hostile -------------------------------------------------------


async def steady(run: FaultRun) -> None:
    await asyncio.sleep(run.duration_s)


FAULTS: tuple[Fault, ...] = (
    Fault("kill-daemon", "kill -9 of the whole daemon (twice), restarted", kill_daemon, short=True),
    Fault(
        "kill-worker",
        "kill -9 of one worker process of two; the supervisor replaces it",
        kill_worker,
        prepare=prepare_workers,
    ),
    Fault("postgres-stop", "PostgreSQL stopped for 5 s, restarted", server_stopped("postgres", 5)),
    Fault(
        "elasticsearch-stop",
        "Elasticsearch stopped, restarted (~30 s to start)",
        server_stopped("elasticsearch", 2),
    ),
    Fault("redis-stop", "Redis stopped for 5 s, restarted", server_stopped("redis", 5), short=True),
    Fault("postgres-slow", "PostgreSQL behind +100 ms per packet", slowed("postgres", 0.1)),
    Fault(
        "elasticsearch-slow",
        "Elasticsearch behind +300 ms per packet",
        slowed("elasticsearch", 0.3),
    ),
    Fault("redis-slow", "Redis behind +50 ms per packet (timeout 25 ms)", slowed("redis", 0.05)),
    Fault(
        "postgres-cut",
        "PostgreSQL connections reset at random and around COMMIT",
        cut("postgres"),
        short=True,
    ),
    Fault(
        "elasticsearch-cut",
        "Elasticsearch connections reset at random (mid-bulk)",
        cut("elasticsearch"),
        short=True,
    ),
    Fault("redis-cut", "Redis connections reset at random", cut("redis")),
    Fault(
        "elasticsearch-rollover",
        "logs data stream rolled over while bulk answers are held, then the answers cut",
        rollover_between_attempts(4),
        cleanup=cleanup_rollover,
        config={"sinks": {"elasticsearch": {"logs_dataset": ROLLOVER_DATASET}}},
    ),
    Fault(
        "postgres-disk-full",
        "the tablespace's filesystem full (tmpfs), then grown",
        disk_full,
        prepare=prepare_disk,
        cleanup=cleanup_disk,
    ),
    Fault(
        "postgres-read-only",
        "the database read-only (default_transaction_read_only)",
        read_only,
        short=True,
    ),
    Fault(
        "elasticsearch-429",
        "a tiny ES node (write queue 1) saturated by its own load",
        es_overloaded,
        prepare=prepare_tiny_es,
        cleanup=cleanup_tiny_es,
    ),
    Fault(
        "clock-skew",
        "records 2 years old (stored) and 10 days ahead (refused)",
        steady,
        skewed=True,
        short=True,
    ),
    Fault(
        "kill-daemon-accepted",
        "kill -9 in ack: accepted mode (loss allowed, reported)",
        kill_daemon,
        promise=False,
        config={"ingest": {"ack": "accepted"}},
    ),
)
