"""Redis on a real `ingestd run`: its contents are not trusted, and AUTH / TLS work for real.

Garbage written into the shared pressure hash (under the test's own key prefix on the dev
stack's Redis) must not take the daemon down. AUTH and `rediss://` are tested against a
second redis-server (Debian's binary) that the test starts on a free port with `requirepass`
and its own TLS port; the shared Redis is never reconfigured.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.harness import IngestdProcess, base_config, create_design_tables, deep_merge
from tests.integration.conftest import Stack, make_certificate, unavailable

pytestmark = [pytest.mark.integration]

PASSWORD = "redis-auth-test-pw-42"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own: `requirepass` on a plain and a TLS port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            unavailable("redis-server (Debian package redis-server) is not installed")
        self.cert, key = make_certificate(workdir, "redis")
        self.port, self.tls_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [
                binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--tls-port", str(self.tls_port), "--tls-cert-file", str(self.cert),
                "--tls-key-file", str(key), "--tls-auth-clients", "no",
                "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
                "--dir", str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, password=PASSWORD, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)
        self.client = client

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tables(make_database: Callable[[], str], stack: Stack) -> str:
    dsn = make_database()
    create_design_tables(dsn, stack.pg_admin_dsn)
    return dsn


def run_daemon(
    stack: Stack, dsn: str, redis_url: str, workdir: Path, **extra: Any
) -> IngestdProcess:
    config = deep_merge(
        base_config(dsn, stack.es_url, redis_url),
        deep_merge(
            {
                "sinks": {"elasticsearch": {"enabled": False}},
                "maintenance": {"enabled": False},
                "pressure": {"publish_interval_s": 0.2, "stale_after_s": 30},
            },
            extra,
        ),
    )
    return IngestdProcess(config, workdir)


def redis_state(proc: IngestdProcess) -> dict[str, Any]:
    status = json.loads(proc.get("/status")[1])
    return status["health"]["components"]["redis"]


def wait_until(proc: IngestdProcess, done: Callable[[], bool]) -> None:
    """Polls `done` every 0.2 s for up to 10 s; a timeout fails showing the daemon's Redis state."""
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, redis_state(proc)
        time.sleep(0.2)


def test_garbage_in_the_pressure_hash_is_ignored(
    stack: Stack, tables: str, redis_client: redis.Redis, redis_prefix: str, tmp_path: Path
) -> None:
    """Malformed entries of other 'replicas' are treated as absent; the daemon keeps serving."""
    key = f"{redis_prefix}pressure"
    seconds, micros = redis_client.time()
    now_ms = seconds * 1000 + micros // 1000
    garbage = [
        b"not json",
        b"[]",
        b'"traces"',
        b'{"traces": 5}',
        b'{"traces": ["a", 1]}',
        b'{"traces": [0.5, 7]}',
        b'{"traces": [NaN, 1]}',
        b'{"traces": [0.5, 1, 2]}',
        b'{"traces": {"fill": 1}}',
        b"\xff\xfe",
    ]
    redis_client.hset(key, mapping={f"bad{i}": b"%d " % now_ms + g for i, g in enumerate(garbage)})
    redis_client.hset(key, b"\xff-bad-name", b"%d {}" % now_ms)
    redis_client.pexpire(key, 60_000)
    proc = run_daemon(stack, tables, stack.redis_url, tmp_path, redis={"key_prefix": redis_prefix})
    try:
        proc.wait_ready()
        time.sleep(1.0)  # five publish ticks, each reading every entry above
        assert proc.proc.poll() is None, proc.events[-5:]
        status = json.loads(proc.get("/status")[1])
        assert status["pressure"]["replicas"] == 1, "only this daemon's own entry counts"
        assert status["pressure"]["signals"]["traces"]["gate"] == "open"
        _, metrics = proc.get("/metrics")
        assert b"ingestd_pressure_malformed_entries_total" in metrics
        proc.wait_ready()
    finally:
        proc.terminate()


def test_redis_auth_with_password_in_the_url(
    stack: Stack, tables: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """`redis://:password@host` authenticates: the daemon's state lands in the private Redis."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{private_redis.port}/0"
    proc = run_daemon(stack, tables, url, tmp_path, redis={"key_prefix": "authtest:"})
    try:
        proc.wait_ready()
        wait_until(proc, lambda: bool(private_redis.client.exists("authtest:pressure")))
        assert redis_state(proc)["state"] == "ok"
    finally:
        proc.terminate()


def test_redis_wrong_password_is_degraded_not_down(
    stack: Stack, tables: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """A wrong password: Redis is reported degraded, ingest stays ready (fails open)."""
    url = f"redis://:wrong-password@127.0.0.1:{private_redis.port}/0"
    proc = run_daemon(stack, tables, url, tmp_path)
    try:
        proc.wait_ready()
        wait_until(proc, lambda: redis_state(proc)["state"] == "degraded")
    finally:
        proc.terminate()


def test_rediss_tls_with_auth(
    stack: Stack, tables: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """`rediss://` with a CA file and a password: TLS and AUTH together, state is written."""
    url = (
        f"rediss://:{PASSWORD}@127.0.0.1:{private_redis.tls_port}/0"
        f"?ssl_ca_certs={private_redis.cert}"
    )
    proc = run_daemon(stack, tables, url, tmp_path, redis={"key_prefix": "tlstest:"})
    try:
        proc.wait_ready()
        wait_until(proc, lambda: bool(private_redis.client.exists("tlstest:pressure")))
        assert redis_state(proc)["state"] == "ok"
    finally:
        proc.terminate()
