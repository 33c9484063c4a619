"""A second, tiny Elasticsearch node that answers 429 under its own load (the honest version).

Started from the dev stack's cached distribution as the stack's user, on free ports, with a
256 MB heap, one write thread and a write queue of one: a few concurrent bulk requests are
enough to make it refuse with `es_rejected_execution_exception` (HTTP 429), as a saturated
production cluster does. Stopped and deleted when the fault is over.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.harness import free_port

ES_USER = "ingestd-stack"
CACHE = Path(os.environ.get("INGESTD_CACHE_DIR", "/var/cache/ingestd"))


class Unavailable(Exception):
    """This machine cannot start the tiny node (no cached distribution, no stack user)."""


@dataclass
class TinyElasticsearch:
    home: Path
    root: Path
    port: int = 0
    pid: int = 0

    @classmethod
    def find(cls) -> TinyElasticsearch:
        version = os.environ.get("INGESTD_ES_VERSION", "8.19.21")
        home = CACHE / "es" / f"elasticsearch-{version}"
        if not (home / "bin" / "elasticsearch").exists():
            raise Unavailable(f"no Elasticsearch distribution at {home}")
        if subprocess.run(["id", ES_USER], capture_output=True).returncode != 0:
            raise Unavailable(f"no user {ES_USER} (run `make stack-up` once)")
        return cls(home=home, root=Path(f"/tmp/ingestd-chaos-es-{os.getpid()}"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        conf = self.root / "config"
        shutil.copytree(self.home / "config", conf)
        for sub in ("data", "logs", "tmp"):
            (self.root / sub).mkdir(parents=True)
        self.port = free_port()
        (conf / "elasticsearch.yml").write_text(
            "\n".join(
                [
                    "cluster.name: ingestd-chaos",
                    "node.name: tiny-1",
                    "discovery.type: single-node",
                    "network.host: 127.0.0.1",
                    f"http.port: {self.port}",
                    f"transport.port: {free_port()}",
                    f"path.data: {self.root / 'data'}",
                    f"path.logs: {self.root / 'logs'}",
                    "xpack.security.enabled: false",
                    "xpack.ml.enabled: false",
                    "thread_pool.write.size: 1",
                    "thread_pool.write.queue_size: 1",
                    "cluster.routing.allocation.disk.threshold_enabled: false",
                    "",
                ]
            )
        )
        (conf / "jvm.options.d").mkdir(exist_ok=True)
        (conf / "jvm.options.d" / "heap.options").write_text("-Xms256m\n-Xmx256m\n")
        subprocess.run(["chown", "-R", f"{ES_USER}:{ES_USER}", str(self.root)], check=True)
        java = _java_home()
        pidfile = self.root / "es.pid"
        subprocess.run(
            [
                "runuser",
                "-u",
                ES_USER,
                "--",
                "env",
                f"ES_PATH_CONF={conf}",
                f"ES_TMPDIR={self.root / 'tmp'}",
                f"ES_JAVA_HOME={java}",
                str(self.home / "bin" / "elasticsearch"),
                "-d",
                "-p",
                str(pidfile),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pidfile.exists() and not self.pid:
                self.pid = int(pidfile.read_text().strip() or 0)
            try:
                with urllib.request.urlopen(f"{self.url}/_cluster/health", timeout=2) as reply:
                    if b'"status":"red"' not in reply.read():
                        return
            except OSError:
                pass
            time.sleep(1)
        self.stop()
        raise Unavailable(f"the tiny Elasticsearch did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        pidfile = self.root / "es.pid"
        if not self.pid and pidfile.exists():
            self.pid = int(pidfile.read_text().strip() or 0)
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
                for _ in range(60):
                    os.kill(self.pid, 0)
                    time.sleep(0.5)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pid = 0
        shutil.rmtree(self.root, ignore_errors=True)


def _java_home() -> str:
    for candidate in sorted(Path("/usr/lib/jvm").glob("java-17-openjdk-*")) + sorted(
        Path("/usr/lib/jvm").glob("*")
    ):
        if (candidate / "bin" / "java").exists():
            return str(candidate)
    raise Unavailable("no Java in /usr/lib/jvm")
