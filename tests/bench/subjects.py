"""The processes under test: ingestd (`ingestd run`) and the OpenTelemetry Collector.

Both run as subprocesses listening on 127.0.0.1 ports chosen here (explicit ports, so that
ingestd's SO_REUSEPORT workers share them). `Meter` samples a process tree with psutil: CPU
seconds (user + system of the process and all its children) and resident memory, per process
and summed.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.harness import IngestdProcess, free_port

MiB = 1024 * 1024


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


# -- CPU and memory of a process tree -----------------------------------------------------------


class Meter:
    """Samples a process tree's RSS every *interval_s* in a thread; reads CPU on demand."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_total = 0
        self.peak_per_process = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exited_cpu = 0.0
        self._known: dict[int, psutil.Process] = {}

    def processes(self) -> list[psutil.Process]:
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for proc in found:
            self._known.setdefault(proc.pid, proc)
        return found

    def cpu_s(self) -> float:
        """CPU seconds used so far by the tree (children that exited are remembered)."""
        self.processes()
        total = 0.0
        for pid, proc in list(self._known.items()):
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                self._known.pop(pid)
                continue
            total += times.user + times.system
        return total

    def rss(self) -> tuple[int, list[int]]:
        """(summed RSS, RSS per process) now, in bytes."""
        sizes = []
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                sizes.append(proc.memory_info().rss)
        return sum(sizes), sizes

    def workers(self) -> int:
        return len(self.processes())

    def reset_peaks(self) -> None:
        self.peak_total = self.peak_per_process = 0

    def start(self) -> Meter:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            total, sizes = self.rss()
            self.peak_total = max(self.peak_total, total)
            self.peak_per_process = max([self.peak_per_process, *sizes])


# -- ingestd --------------------------------------------------------------------------------------


@dataclass
class Ports:
    grpc: int
    http: int
    admin: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


def ingestd_config(
    ports: Ports,
    *,
    pg_dsn: str,
    es_url: str,
    redis_url: str,
    redis_prefix: str,
    es_namespace: str,
    ack: str = "committed",
    discard: bool = False,
    workers: int | None = None,
    flush_when_idle: bool | None = None,
) -> dict[str, Any]:
    """ingestd's defaults, with this run's addresses; see docs/reports/benchmarks-2026-11-26.md."""
    config: dict[str, Any] = {
        "receivers": {
            "grpc": {"endpoint": f"127.0.0.1:{ports.grpc}"},
            "http": {"endpoint": f"127.0.0.1:{ports.http}"},
        },
        "ingest": {"ack": ack},
        "sinks": {
            "timescale": {"dsn": pg_dsn, "discard": discard},
            "elasticsearch": {
                "urls": [es_url],
                "logs_namespace": es_namespace,
                "discard": discard,
            },
        },
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
        "admin": {"endpoint": f"127.0.0.1:{ports.admin}"},
        "telemetry": {"log_format": "json", "log_level": "info"},
        # The maintenance job (retention, rollups) would run inside the measured window.
        "maintenance": {"enabled": False},
        "shutdown": {"grace_s": 15},
    }
    if workers is not None:
        config["workers"] = workers
    if flush_when_idle is not None:
        sinks = config["sinks"]
        sinks["timescale"]["batch"] = {"flush_when_idle": flush_when_idle}
        # A batch section replaces the sink's own defaults: restate the Elasticsearch ones.
        sinks["elasticsearch"]["batch"] = {
            "max_rows": 50_000,
            "max_bytes": 8 * MiB,
            "flush_when_idle": flush_when_idle,
        }
    return config


class Ingestd:
    """One `ingestd run` subprocess, ready to serve, with a Meter on its process tree."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ports = Ports(
            grpc=int(config["receivers"]["grpc"]["endpoint"].rpartition(":")[2]),
            http=int(config["receivers"]["http"]["endpoint"].rpartition(":")[2]),
            admin=int(config["admin"]["endpoint"].rpartition(":")[2]),
        )
        self.process = IngestdProcess(config, workdir)
        self.process.wait_ready(timeout_s=90)
        self.meter = Meter(self.process.proc.pid).start()

    def target(self, transport: str) -> str:
        return f"127.0.0.1:{self.ports.grpc if transport == 'grpc' else self.ports.http}"

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.ports.admin}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text: str = resp.read().decode()
            return text

    def stop(self) -> None:
        self.meter.stop()
        try:
            self.process.terminate(timeout_s=40)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextlib.contextmanager
def running_ingestd(config: dict[str, Any], workdir: Path) -> Iterator[Ingestd]:
    subject = Ingestd(config, workdir)
    try:
        yield subject
    finally:
        subject.stop()


def histogram(text: str, name: str, labels: dict[str, str]) -> dict[str, float]:
    """A Prometheus histogram's series matching *labels*, as {"le:<bound>", "sum", "count"}."""
    out: dict[str, float] = {}
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    pattern = re.compile(rf"^{name}_(bucket|sum|count)\{{([^}}]*)\}} (\S+)$", re.M)
    for kind, found, value in pattern.findall(text):
        if not all(w in found for w in wanted):
            continue
        if kind == "bucket":
            bound = re.search(r'le="([^"]+)"', found)
            if bound:
                key = f"le:{bound.group(1)}"
                out[key] = out.get(key, 0.0) + float(value)
        else:
            out[kind] = out.get(kind, 0.0) + float(value)
    return out


def batch_histogram(text: str, sink: str) -> dict[str, float]:
    """`ingestd_batch_items{sink=...}` (items per written batch)."""
    return histogram(text, "ingestd_batch_items", {"sink": sink})


def _delta_buckets(before: dict[str, float], after: dict[str, float]) -> list[tuple[float, float]]:
    return sorted(
        ((float(k[3:]), after[k] - before.get(k, 0.0)) for k in after if k.startswith("le:")),
        key=lambda kv: kv[0],
    )


def bucket_quantile(before: dict[str, float], after: dict[str, float], q: float) -> float:
    """Upper bound of the bucket holding quantile *q* of what was observed between scrapes."""
    count = after.get("count", 0.0) - before.get("count", 0.0)
    return next(
        (bound for bound, cumulative in _delta_buckets(before, after) if cumulative >= q * count),
        float("inf"),
    )


def batch_sizes(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean and median (bucket upper bound) items per batch written between two scrapes."""
    count = after.get("count", 0.0) - before.get("count", 0.0)
    if count <= 0:
        return {"batches": 0}
    total = after.get("sum", 0.0) - before.get("sum", 0.0)
    return {
        "batches": count,
        "mean_items": total / count,
        "median_items_le": bucket_quantile(before, after, 0.5),
    }


def write_times(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Sink write attempts between two scrapes of `ingestd_sink_write_seconds`: p50/p99 (ms)."""
    count = after.get("count", 0.0) - before.get("count", 0.0)
    if count <= 0:
        return {"writes": 0}
    return {
        "writes": count,
        "mean_ms": (after.get("sum", 0.0) - before.get("sum", 0.0)) / count * 1e3,
        "p50_ms_le": bucket_quantile(before, after, 0.5) * 1e3,
        "p99_ms_le": bucket_quantile(before, after, 0.99) * 1e3,
    }


# -- the OpenTelemetry Collector ----------------------------------------------------------------


class Collector:
    """The Collector binary with a config written here; ready once its OTLP port listens."""

    def __init__(
        self, binary: Path, config: dict[str, Any], workdir: Path, port: int, http_port: int
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "otelcol.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "otelcol.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(binary), f"--config={self.config_path}"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(port, 30, self.proc)
        self.port = port
        self.http_port = http_port
        self.meter = Meter(self.proc.pid).start()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.meter.stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
