"""The one test harness every suite uses (integration, chaos, bench): configs, ingestd runs.

- Configs: `deep_merge`, `free_port`, and the builders `config_text` (in-loop, TimescaleDB
  only), `logs_config` (in-loop, Elasticsearch only) and `base_config` (a real process, every
  server).
- In the test's event loop: `running(config)` builds the daemon's pipeline, starts it and
  drains it on exit; gRPC stubs, retry hints and a one-statement `query` go with it.
- As a real `ingestd run` process: `IngestdProcess` (temp config, JSON log lines parsed, so a
  test learns the ports it got, from config endpoints on port 0, and sees lifecycle events as
  an operator would).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from ingestd import config
from ingestd.daemon import Daemon, build
from ingestd.pipeline import deadline_in
from ingestd.receiver.otlp_grpc import OtlpGrpcReceiver
from ingestd.receiver.otlp_http import OtlpHttpReceiver
from ingestd.schema import command


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a config that cannot say port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """*base* with *override* merged in key by key (a nested dict merges, anything else
    replaces)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class IngestdProcess:
    """One ingestd subprocess with its JSON log lines collected in the background."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.config_path = workdir / "ingestd.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingestd", "run", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"event": "non_json_line", "line": raw.decode(errors="replace")}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait_for_event(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for event in self.events[seen:]:
                    if match(event):
                        return event
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"event not seen within {timeout_s}s (exit={self.proc.poll()}); "
                        f"last events: {self.events[-10:]}"
                    )
                self._cond.wait(min(left, 0.2))

    def port_of(self, event_name: str) -> int:
        event = self.wait_for_event(lambda e: e.get("event") == event_name)
        return int(str(event["endpoint"]).rpartition(":")[2])

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.port_of('admin_listening')}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, want: int = 200, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        status = body = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ingestd exited with {self.proc.returncode}: {self.events}")
            status, body = self.get("/readyz")
            if status == want:
                return
            time.sleep(0.2)
        raise AssertionError(f"/readyz stayed {status} (wanted {want}): {body!r}")

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait for the exit, and for the last log lines to be read; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        # The reader may still hold the last lines (`stopped`) when the process has exited.
        self._reader.join(timeout=5.0)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def rss_mib(self) -> float:
        """The resident set size of the daemon process (not its workers), in MiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS"))
        return int(line.split()[1]) / 1024

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the daemon process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RawClients:
    """An ingestd subprocess's receiver ports, with clients that send bytes as they are (no
    encoding, no retries): for tests of what the daemon does with odd or hostile requests."""

    def __init__(self, proc: IngestdProcess) -> None:
        self.proc = proc
        self.grpc_port = proc.port_of("grpc_listening")
        self.http_port = proc.port_of("http_receiver_listening")

    @functools.cached_property
    def channel(self) -> grpc.Channel:
        """One insecure channel to the gRPC receiver, kept (messages up to 64 MiB)."""
        return grpc.insecure_channel(
            f"127.0.0.1:{self.grpc_port}", options=[("grpc.max_send_message_length", 64 << 20)]
        )

    def grpc(
        self,
        method: str,
        body: bytes,
        timeout_s: float = 60,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> tuple[grpc.StatusCode, bytes, grpc.RpcError | None]:
        """(status code, answer or details, the error or None)."""
        call = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            return grpc.StatusCode.OK, call(body, timeout=timeout_s, metadata=metadata), None
        except grpc.RpcError as error:
            return error.code(), (error.details() or "").encode(), error

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout_s: float = 60,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request on a new connection: (status, headers by lower-case name, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout_s)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            conn.close()


class PeakRss:
    """The highest RSS (MiB) of a daemon while in a `with` block, sampled every *interval_s* on
    a thread; `before` is the reading on entry, `mib` the peak (the reading on exit included)."""

    def __init__(self, proc: IngestdProcess, interval_s: float) -> None:
        self.proc = proc
        self.interval_s = interval_s
        self.before = self.mib = proc.rss_mib()
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        while not self._done.wait(self.interval_s):
            self.mib = max(self.mib, self.proc.rss_mib())

    def __enter__(self) -> PeakRss:
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._watcher.join()
        self.mib = max(self.mib, self.proc.rss_mib())


def base_config(pg_dsn: str, es_url: str, redis_url: str) -> dict[str, Any]:
    """A config for tests: every listener on a free port, JSON logs, short intervals."""
    return {
        "receivers": {
            "grpc": {"endpoint": "127.0.0.1:0"},
            "http": {"endpoint": "127.0.0.1:0"},
        },
        "sinks": {
            "timescale": {"dsn": pg_dsn, "pool": {"min_size": 1, "max_size": 4}},
            "elasticsearch": {"urls": [es_url]},
        },
        "redis": {"url": redis_url},
        "admin": {"endpoint": "127.0.0.1:0", "check_interval_s": 0.5},
        "telemetry": {"log_format": "json", "log_level": "info"},
        "shutdown": {"grace_s": 10},
    }


# -- in the test's event loop ------------------------------------------------------------------


def config_text(dsn: str, **overrides: Any) -> str:
    """A config for tests: gRPC on a free port, only TimescaleDB, fast flushes.

    *overrides* are sections merged key by key into the defaults
    (`ingest={"ack": "accepted"}` changes only ingest.ack).
    """
    base: dict[str, Any] = {
        "receivers": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"enabled": False}},
        "redis": {"enabled": False},
        "ingest": {"ack_timeout_s": 20},
        "sinks": {
            "elasticsearch": {"enabled": False},
            "timescale": {
                "dsn": dsn,
                "batch": {"flush_interval_s": 0.05},
                "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "max_elapsed_s": 30},
            },
        },
    }
    return yaml.safe_dump(deep_merge(base, overrides))


def logs_config(es_url: str, namespace: str, *, grpc: bool = False) -> config.Config:
    """ingestd with only the logs path: Elasticsearch on, TimescaleDB and Redis off; HTTP (and
    gRPC if asked) on free ports."""
    doc: dict[str, Any] = {
        "receivers": {
            "grpc": {"enabled": grpc, "endpoint": f"127.0.0.1:{free_port()}"},
            "http": {"endpoint": f"127.0.0.1:{free_port()}"},
        },
        "ingest": {"ack_timeout_s": 20},
        "sinks": {
            "timescale": {"enabled": False},
            "elasticsearch": {
                "urls": [es_url],
                "logs_namespace": namespace,
                "batch": {"flush_interval_s": 0.05},
                "retry": {"initial_backoff_s": 0.2, "max_backoff_s": 2, "max_elapsed_s": 90},
            },
        },
        "redis": {"enabled": False},
    }
    return config.parse(yaml.safe_dump(doc))


@dataclass
class Running:
    """A daemon pipeline running in the test's loop, and where to reach it."""

    daemon: Daemon

    @property
    def port(self) -> int:
        """The gRPC receiver's port."""
        return self._port("receiver.grpc")

    @property
    def http_port(self) -> int:
        """The OTLP/HTTP receiver's port."""
        return self._port("receiver.http")

    def _port(self, stage: str) -> int:
        receiver = self.daemon.stages[stage]
        assert isinstance(receiver, OtlpGrpcReceiver | OtlpHttpReceiver)
        assert receiver.port is not None
        return receiver.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def status(self, table: str) -> dict[str, Any]:
        """The /status entry of *table*'s batcher (its writer's counters included)."""
        return self.daemon.pipeline.status_sources()[f"batcher.{table}"]()


@contextlib.asynccontextmanager
async def running(cfg: config.Config | str) -> AsyncIterator[Running]:
    """Start the daemon's pipeline (no admin server, no signal handlers) from *cfg* (a Config
    or its text); stop it (drain) on exit."""
    daemon = build(config.parse(cfg) if isinstance(cfg, str) else cfg)
    async with asyncio.TaskGroup() as tasks:
        await daemon.pipeline.start(tasks)
        try:
            yield Running(daemon)
        finally:
            await daemon.pipeline.stop(deadline_in(15.0))


def http_url(daemon: Daemon, path: str = "/v1/logs") -> str:
    """The URL of *path* on the daemon's OTLP/HTTP receiver."""
    return f"http://127.0.0.1:{Running(daemon).http_port}{path}"


@contextlib.asynccontextmanager
async def stubs(target: str) -> AsyncIterator[tuple[Any, Any]]:
    """(TraceServiceStub, MetricsServiceStub) on one channel to *target*."""
    async with grpc.aio.insecure_channel(target) as channel:
        yield (
            trace_service_pb2_grpc.TraceServiceStub(channel),
            metrics_service_pb2_grpc.MetricsServiceStub(channel),
        )


def retry_delay_s(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay carried by a failed call's status details, if any."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement in its own connection; its rows (none for a command)."""
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


# -- databases -----------------------------------------------------------------------------------


def create_design_tables(dsn: str, admin_dsn: str) -> None:
    """Run `ingestd schema apply` (apache tier on the dev stack) against the fresh, empty
    database of *dsn*, so tests write into exactly the tables a real deployment has.

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
