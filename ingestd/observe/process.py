"""Process self-metrics: CPU, open files and TCP connections by peer, sampled every few seconds.

Resident memory is set here too, and more often by the memory guard (`ingestd.memory`), which
needs it anyway; the supervisor of `workers: N > 1` runs this sampler for itself as well.
Connections are what the kernel says of this process's own sockets (`ingestd.observe.procfs`: a
few calls per open file, not psutil's parse of /proc/net/tcp*): clients of each receiver and
of the admin server, by local port, and connections to PostgreSQL (the pool), Elasticsearch
(the bulk client's HTTP connections) and Redis, by the remote port of their configured addresses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from urllib.parse import urlsplit

import psutil
import structlog
from psycopg.conninfo import conninfo_to_dict

from ingestd.config import Config
from ingestd.memory import read_rss_bytes
from ingestd.observe import procfs
from ingestd.observe.metrics import (
    PROCESS_CONNECTIONS,
    PROCESS_CPU,
    PROCESS_OPEN_FDS,
    PROCESS_RSS,
    PROCESS_START_TIME,
)
from ingestd.pipeline import cancel_and_wait

log = structlog.get_logger("ingestd.observe.process")

# Connections and files change slowly; a scrape every 15-60 s sees at most a few samples.
SAMPLE_INTERVAL_S = 5.0
PEERS = ("grpc", "http", "admin", "postgresql", "elasticsearch", "redis", "other")

# What listens where, known only once the servers are bound: name -> local port (or None).
LocalPorts = Callable[[], dict[str, int | None]]


def remote_ports(config: Config) -> dict[int, str]:
    """Remote port -> peer name for the servers the config names (first one wins a clash)."""
    ports: dict[int, str] = {}
    if config.sinks.timescale.enabled:
        with contextlib.suppress(Exception):  # a DSN libpq would refuse; the sink says so
            port = conninfo_to_dict(config.sinks.timescale.dsn).get("port") or 5432
            ports.setdefault(int(str(port).split(",")[0]), "postgresql")
    if config.sinks.elasticsearch.enabled:
        for url in config.sinks.elasticsearch.urls:
            parts = urlsplit(url)
            default = 443 if parts.scheme == "https" else 9200
            ports.setdefault(parts.port or default, "elasticsearch")
    if config.redis.enabled:
        ports.setdefault(urlsplit(config.redis.url).port or 6379, "redis")
    return ports


class ProcessSampler:
    """A stage that updates the ingestd_process_* metrics every SAMPLE_INTERVAL_S."""

    name = "process"

    def __init__(self, config: Config, local_ports: LocalPorts) -> None:
        self._process = psutil.Process()
        self._remote = remote_ports(config)
        self._local_ports = local_ports
        self._cpu = 0.0
        self._task: asyncio.Task[None] | None = None
        self.connections: dict[str, int] = dict.fromkeys(PEERS, 0)

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        PROCESS_START_TIME.set(self._process.create_time())
        self.sample()
        self._task = tasks.create_task(self._loop(), name="process")

    async def stop(self, deadline: float) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        # Once soon after start (the pools connect in the background), then every interval.
        await asyncio.sleep(1.0)
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def sample(self) -> None:
        """Read CPU, open files and connections now (~0.1 ms with 25 files open)."""
        try:
            cpu = procfs.cpu_seconds()
            rss = read_rss_bytes()
            fds = procfs.open_fds()
            connections = procfs.established_tcp()
        except OSError as exc:
            log.warning("process_sample_failed", error=str(exc)[:300])
            return
        if cpu > self._cpu:
            PROCESS_CPU.inc(cpu - self._cpu)
            self._cpu = cpu
        PROCESS_OPEN_FDS.set(fds)
        PROCESS_RSS.set(rss)
        local = {port: name for name, port in self._local_ports().items() if port}
        counts: collections.Counter[str] = collections.Counter()
        for local_port, remote_port in connections:
            counts[local.get(local_port) or self._remote.get(remote_port) or "other"] += 1
        for peer in PEERS:
            self.connections[peer] = counts[peer]
            PROCESS_CONNECTIONS.labels(peer=peer).set(counts[peer])

    def status(self) -> dict[str, object]:
        """For /status: connections by peer at the last sample."""
        return {"tcp_connections": dict(self.connections)}
