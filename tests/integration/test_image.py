"""The container image as SREs run it: built here, run the way the Kubernetes manifests run it.

`deploy/image.sh` builds the image with docker or podman (podman here), offline from a wheelhouse.
Each container then runs like deploy/k8s/deployment.yaml's pod: read-only root filesystem,
uid 10001, every capability dropped, no new privileges, a 64 MiB tmpfs on /tmp, 2 CPUs and
1 GiB, the ConfigMap's own file (deploy/k8s/config/ingestd.yaml) mounted at /etc/ingestd, and
the Secret's addresses (here the dev stack's) in the environment; host networking with ports of
its own, so it never collides with another test. Timings print with `pytest -s`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from elasticsearch import Elasticsearch
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from tests.harness import free_port, query
from tests.integration.conftest import ES_TEST_NAMESPACE, Stack, unavailable
from tests.integration.load import Clients, assert_exactly_once
from tests.integration.ops_support import post_http
from tests.samples import metric_request, span_request

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SH = ROOT / "deploy" / "image.sh"
K8S_CONFIG = ROOT / "deploy" / "k8s" / "config"
LOGS_INDEX = f"logs-*-{ES_TEST_NAMESPACE}"
# deploy/k8s/config/ingestd.yaml's shutdown.grace_s.
GRACE_S = 25

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("no version in pyproject.toml")


IMAGE = f"ingestd:{_version()}"


@dataclass(frozen=True)
class Engine:
    """docker or podman with the global flags and per-run flags deploy/image.sh chose."""

    words: list[str]
    run_args: list[str]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.words, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    @property
    def name(self) -> str:
        return self.words[0]


@pytest.fixture(scope="module")
def engine() -> Engine:
    found = subprocess.run([IMAGE_SH, "--engine"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        unavailable(f"no container engine: {found.stderr.strip()} (`make tools` installs podman)")
    flags = subprocess.run([IMAGE_SH, "--run-args"], capture_output=True, text=True, check=True)
    return Engine(found.stdout.split(), flags.stdout.split())


@pytest.fixture(scope="module")
def image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`make image`'s build (cached layers after the first run on a machine), by id: another
    checkout on the same machine may move the tag meanwhile."""
    iidfile = tmp_path_factory.mktemp("image") / "iid"
    began = time.monotonic()
    built = subprocess.run(
        [IMAGE_SH],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "INGESTD_IIDFILE": str(iidfile)},
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    print(f"\nimage: built {IMAGE} with {engine.name} in {time.monotonic() - began:.1f} s")
    return iidfile.read_text().strip()


@dataclass
class Container:
    """One ingestd container started like the Kubernetes pod; ports are its own."""

    engine: Engine
    image: str
    env: dict[str, str]
    name: str = field(default_factory=lambda: f"ingestd-test-{uuid.uuid4().hex[:10]}")
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)

    def flags(self) -> list[str]:
        env = {
            **self.env,
            "INGESTD_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "INGESTD_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "INGESTD_ADMIN_ENDPOINT": f"127.0.0.1:{self.admin_port}",
            "INGESTD_ES_LOGS_NAMESPACE": ES_TEST_NAMESPACE,
        }
        return [
            *self.engine.run_args,
            "--network=host",
            "--read-only",
            "--user=10001:10001",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--tmpfs=/tmp:rw,size=64m,mode=1777",
            f"--volume={K8S_CONFIG}:/etc/ingestd:ro",
            "--cpus=2",
            "--memory=1g",
            *(f"--env={k}={v}" for k, v in sorted(env.items())),
        ]

    def once(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the image to completion with these arguments (e.g. `schema apply`)."""
        return self.engine("run", "--rm", *self.flags(), self.image, *args, timeout=180)

    def start(self) -> None:
        started = self.engine(
            "run", "--detach", f"--name={self.name}", "--stop-timeout=30", *self.flags(), self.image
        )
        assert started.returncode == 0, started.stderr

    def logs(self) -> str:
        out = self.engine("logs", "--tail=40", self.name)
        return out.stdout + out.stderr

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError as exc:
            return 0, str(exc).encode()

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        status, body = 0, b""
        while time.monotonic() < deadline:
            status, body = self.get("/readyz")
            if status == 200:
                return
            state = self.engine("inspect", "--format={{.State.Running}}", self.name)
            assert state.stdout.strip() == "true", f"container stopped:\n{self.logs()}"
            time.sleep(0.2)
        raise AssertionError(f"/readyz stayed {status}: {body[:300]!r}\n{self.logs()}")

    def exit_code(self, timeout_s: float) -> int:
        waited = self.engine("wait", self.name, timeout=timeout_s)
        assert waited.returncode == 0, waited.stderr
        return int(waited.stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        self.engine("rm", "--force", self.name)


@pytest.fixture(scope="module")
def image_database(make_database: Callable[[], str]) -> str:
    """A fresh database for this module's containers."""
    return make_database()


@pytest.fixture(scope="module")
def secret_env(stack: Stack, image_database: str, es: Elasticsearch) -> dict[str, str]:
    """What the Secret provides under Kubernetes: the dev stack's addresses."""
    return {
        "INGESTD_PG_DSN": image_database,
        "INGESTD_ES_URL": stack.es_url,
        "INGESTD_REDIS_URL": stack.redis_url,
    }


@pytest.fixture(scope="module")
def schema_applied(engine: Engine, image: str, secret_env: dict[str, str]) -> None:
    """`ingestd schema apply` from the image, as the compose file's schema job runs it."""
    applied = Container(engine, image, secret_env).once(
        "schema", "apply", "-c", "/etc/ingestd/ingestd.yaml"
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr


@pytest.fixture
def container(
    engine: Engine, image: str, schema_applied: None, secret_env: dict[str, str]
) -> Iterator[Container]:
    running = Container(engine, image, secret_env)
    began = time.monotonic()
    running.start()
    try:
        running.wait_ready()
        print(f"\nimage: {running.name} ready {time.monotonic() - began:.2f} s after `run`")
        yield running
    finally:
        running.remove()


def test_image_holds_no_compiler_no_source_no_pip(engine: Engine, image: str) -> None:
    """The runtime image has no compiler, no source tree or wheelhouse, and no pip in its venv."""
    script = (
        "for c in gcc cc c++ g++ clang make ld as rustc cargo; do command -v $c; done;"
        "ls -d /src /wheels /build /opt/pip /opt/ingestd/bin/pip* 2>/dev/null;"
        "ls /opt/ingestd/lib/python3*/site-packages | grep -i -E '^(pip|setuptools|tests)\\b';"
        "find / -xdev \\( -name pyproject.toml -o -name Makefile -o -name '*.rs' \\) -print;"
        "/opt/ingestd/bin/python -c 'import pip' 2>/dev/null && echo importable-pip;"
        "echo end"
    )
    out = engine("run", "--rm", *engine.run_args, "--entrypoint=sh", image, "-c", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == ["end"], out.stdout
    config = json.loads(engine("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["ingestd"]
    size = int(engine("image", "inspect", "--format={{.Size}}", image).stdout.strip())
    print(f"\nimage: {IMAGE} is {size / 1e6:.0f} MB")


def _logs_request(tag: str, n: int) -> logs_service_pb2.ExportLogsServiceRequest:
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "image-test"
    records = rl.scope_logs.add().log_records
    for i in range(n):
        record = records.add(time_unix_nano=time.time_ns(), severity_number=9)
        record.body.string_value = f"line {i} of {tag}"
        record.attributes.add(key="run_id").value.string_value = tag
    return request


def _stored(dsn: str, es: Elasticsearch, tag: str) -> tuple[int, int, int]:
    """(spans, sum+gauge points, log records) stored under *tag*."""
    spans = query(dsn, "SELECT count(*) FROM traces WHERE name = %s", f"GET /api/items/{{id}}{tag}")
    points = query(
        dsn,
        "SELECT count(*) FROM metrics WHERE attributes->>'tag' = %s"
        " AND name IN ('http.server.requests', 'process.memory.usage')",
        tag,
    )
    es.indices.refresh(index=LOGS_INDEX)
    logs = es.count(index=LOGS_INDEX, query={"term": {"attributes.run_id": tag}})["count"]
    return spans[0][0], points[0][0], logs


async def test_every_signal_over_both_transports_is_stored(
    container: Container, engine: Engine, image_database: str, es: Elasticsearch
) -> None:
    """Traces, metrics and logs sent over gRPC and HTTP to the image (2 workers) are all stored."""
    grpc_tag, http_tag = f"-g{uuid.uuid4().hex[:8]}", f"-h{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{container.grpc_port}") as channel:
        traces = trace_service_pb2_grpc.TraceServiceStub(channel)
        metrics = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        logs = logs_service_pb2_grpc.LogsServiceStub(channel)
        await traces.Export(span_request(50, tag=grpc_tag), timeout=30)
        await metrics.Export(metric_request(16, tag=grpc_tag), timeout=30)
        await logs.Export(_logs_request(grpc_tag, 30), timeout=30)

    http = f"http://127.0.0.1:{container.http_port}"
    for path, body in [
        ("/v1/traces", span_request(40, tag=http_tag)),
        ("/v1/metrics", metric_request(8, tag=http_tag)),
        ("/v1/logs", _logs_request(http_tag, 20)),
    ]:
        status, _, answer = await asyncio.to_thread(
            post_http, http + path, body.SerializeToString(), 30
        )
        assert status == 200, (path, answer[:300], container.logs())

    # ack: committed: an OK answer means stored already.
    assert await asyncio.to_thread(_stored, image_database, es, grpc_tag) == (50, 32, 30)
    assert await asyncio.to_thread(_stored, image_database, es, http_tag) == (40, 16, 20)

    # workers: auto read the pod's CPU limit (2) from the container's cgroup.
    status, metrics = container.get("/metrics")
    assert status == 200
    assert "\ningestd_workers_running 2.0\n" in metrics.decode(), metrics[:2000]

    # The image's own HEALTHCHECK (python3 asking /readyz) passes; podman runs it on demand.
    if engine.name == "podman":
        health = engine("healthcheck", "run", container.name)
        assert health.returncode == 0, health.stdout + health.stderr


async def test_sigterm_under_load_stores_every_acknowledged_span(
    container: Container, image_database: str
) -> None:
    """SIGTERM under load: exit 0 within shutdown.grace_s, every acknowledged span stored once."""
    clients = Clients(f"127.0.0.1:{container.grpc_port}", count=4, spans=20, give_up_s=5)
    stop = asyncio.Event()
    load = asyncio.create_task(clients.run(stop))
    try:
        await asyncio.sleep(3)
        assert clients.acked, f"no request acknowledged under load: {clients.errors()}"
        began = time.monotonic()
        killed = await asyncio.to_thread(container.engine, "kill", "--signal=TERM", container.name)
        assert killed.returncode == 0, killed.stderr
        code = await asyncio.to_thread(container.exit_code, GRACE_S + 10)
        took = time.monotonic() - began
    finally:
        stop.set()
        await load
    print(
        f"\nimage: drained and exited {code} in {took:.2f} s; {len(clients.acked)} requests acked"
    )
    assert code == 0, container.logs()
    assert took < GRACE_S
    assert_exactly_once(image_database, clients)
