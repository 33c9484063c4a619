"""The supervisor of `workers: N > 1`: N worker processes sharing the ports, one admin server.

```
ingestd run (supervisor: admin :13133, signals, restarts)
 +-- python -m ingestd run  worker 0  (gRPC :4317, HTTP :4318 with SO_REUSEPORT; own pipeline)
 +-- python -m ingestd run  worker 1  ...
```

Each worker is a fresh interpreter (grpc does not survive fork) running the ordinary daemon
(`ingestd.daemon.serve`) with its own sinks, batchers and Redis connections; the kernel spreads
new connections over the workers' listening sockets. The supervisor:
- reserves the receiver ports (binding them with SO_REUSEPORT, without listening), so that a
  port 0 becomes one port all workers share and no other program takes it during a restart;
- serves /livez, /readyz (200 when every worker is ready and it is not draining), /status
  (each worker's state and its own /status) and /metrics (every worker's values added up,
  prometheus_client's multiprocess mode; see `ingestd.observe.metrics`);
- restarts a worker that exits or stops answering its private /readyz (hung), with backoff,
  logging `worker_exited` and `worker_started`; a worker that fails before the first start
  completed fails the whole start-up (exit 1), like a single process would;
- forwards SIGTERM/SIGINT (drain) and SIGHUP (reload) to the workers, waits for them within
  `shutdown.grace_s` and exits 0 when all drained; a second signal is forwarded too (the
  workers abort) and every worker still running 3 s later is killed (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

from ingestd import __version__
from ingestd.config import Config
from ingestd.observe import metrics_files
from ingestd.observe.admin import AdminServer
from ingestd.observe.health import Health, State
from ingestd.observe.metrics import (
    BUILD_INFO,
    DRAINING,
    WORKER_RESTARTS,
    WORKERS_CONFIGURED,
    WORKERS_RUNNING,
)
from ingestd.observe.process import ProcessSampler
from ingestd.pipeline import StartupError
from ingestd.workers import ports
from ingestd.workers.worker import ENV, WorkerSpec

log = structlog.get_logger("ingestd.workers.supervisor")

# Restart backoff: 0.5 s doubling to 30 s; a worker that ran this long starts over at 0.5 s.
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
# A worker whose /readyz does not answer at all this many checks in a row is hung: killed.
HUNG_AFTER_CHECKS = 3
# After the workers' grace period: time to exit the interpreter before they are killed.
EXIT_MARGIN_S = 5.0
ABORT_S = 3.0
EXIT_OK, EXIT_FAILURE = 0, 1


@dataclass
class Worker:
    """One worker slot: the process filling it now, and its history."""

    index: int
    process: asyncio.subprocess.Process | None = None
    admin_port: int | None = None
    started_at: float = 0.0
    ever_ready: bool = False
    unanswered_checks: int = 0
    restarts: int = 0
    last_exit: str = ""
    exit_codes: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def component(self) -> str:
        return f"worker.{self.index}"


class Supervisor:
    def __init__(self, config: Config, config_path: Path, count: int, metrics_dir: str) -> None:
        self.config = config
        self.config_path = config_path
        self.count = count
        self.metrics_dir = metrics_dir
        self.health = Health()
        registry = metrics_files.aggregating_registry(metrics_dir)
        self.admin = AdminServer(
            config.admin,
            self.health,
            sources=lambda: {"supervisor": self._status, "workers": self._worker_status},
            registry=registry,
        )
        self.sampler = ProcessSampler(config, lambda: {"admin": self.admin.port})
        self.workers = [Worker(i) for i in range(count)]
        for worker in self.workers:
            self.health.register(worker.component)
        self._reserved: list[socket.socket] = []
        self._endpoints = {"grpc": "", "http": ""}
        self._stopping = asyncio.Event()
        self._draining = False
        self._failed = ""
        self._signals = 0
        self._session: aiohttp.ClientSession | None = None

    # -- the whole run --------------------------------------------------------------------------

    async def run(self, early_signals: list[int]) -> int:
        """Serve until a signal (or a failed start-up); return the exit code."""
        self._watch_signals()
        if early_signals:
            self._on_signal(early_signals[0])
        self._reserve_ports()
        BUILD_INFO.labels(version=__version__).set(1)
        DRAINING.set(0)
        WORKERS_CONFIGURED.set(self.count)
        WORKERS_RUNNING.set(0)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        try:
            async with asyncio.TaskGroup() as tasks:
                await self.admin.start(tasks)
                await self.sampler.start(tasks)
                log.info("supervisor_started", workers=self.count, metrics_dir=self.metrics_dir)
                keepers = [tasks.create_task(self._keep(w)) for w in self.workers]
                prober = tasks.create_task(self._probe_loop())
                await self._stopping.wait()
                await self._drain(keepers)
                prober.cancel()
                await self.sampler.stop(time.monotonic())
                await self.admin.stop(time.monotonic() + 1.0)
        finally:
            await self._session.close()
            for sock in self._reserved:
                sock.close()
        if self._failed:
            raise StartupError(self._failed)
        codes = [code for w in self.workers for code in w.exit_codes[-1:]]
        code = EXIT_OK if self._signals < 2 and all(c == 0 for c in codes) else EXIT_FAILURE
        log.info("stopped", exit_code=code)
        return code

    def _reserve_ports(self) -> None:
        """Bind each receiver's endpoint for the workers (port 0 -> a concrete port);
        `ingestd.workers.ports` says which sockets already on the port make it fail."""
        receivers = self.config.receivers
        for name, section in (("grpc", receivers.grpc), ("http", receivers.http)):
            if not section.enabled:
                continue
            host, _, port = section.endpoint.rpartition(":")
            try:
                sock = ports.reserve(host, int(port))
            except OSError as exc:
                raise StartupError(
                    f"receiver.{name}: cannot listen on {section.endpoint}: {exc}"
                ) from exc
            self._reserved.append(sock)
            self._endpoints[name] = f"{host}:{sock.getsockname()[1]}"

    async def _drain(self, keepers: list[asyncio.Task[None]]) -> None:
        """Forward the drain to every worker and wait for them within the grace period."""
        self._draining = True
        self.health.draining = True
        DRAINING.set(1)
        grace = self.config.shutdown.grace_s
        log.info("draining", grace_s=grace, workers=self.count)
        self._send_all(signal.SIGTERM)
        _, pending = await asyncio.wait(keepers, timeout=grace + EXIT_MARGIN_S)
        if pending:
            running = [w.pid for w in self.workers if _running(w)]
            log.error("workers_killed_after_grace", pids=running, grace_s=grace)
            self._send_all(signal.SIGKILL)
            await asyncio.wait(pending, timeout=5.0)

    # -- one worker slot ----------------------------------------------------------------------

    async def _keep(self, worker: Worker) -> None:
        """Run the slot's worker; restart it when it ends, until the supervisor stops."""
        backoff = BACKOFF_INITIAL_S
        while not self._stopping.is_set():
            code = await self._run_once(worker)
            if self._stopping.is_set():
                return
            reason = _exit_reason(code) if worker.last_exit != "hung" else "hung"
            worker.last_exit = reason
            if not worker.ever_ready and not self.health.started:
                self._failed = f"worker {worker.index} exited during start-up ({reason})"
                log.error("worker_start_failed", worker=worker.index, reason=reason)
                self._stopping.set()
                return
            ran_s = time.monotonic() - worker.started_at
            backoff = BACKOFF_INITIAL_S if ran_s >= STABLE_AFTER_S else backoff
            log.error(
                "worker_exited",
                worker=worker.index,
                pid=worker.pid,
                reason=reason,
                ran_s=round(ran_s, 1),
                restart_in_s=backoff,
            )
            self.health.set(worker.component, State.UNAVAILABLE, f"exited ({reason}); restarting")
            WORKER_RESTARTS.labels(reason=reason).inc()
            worker.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _run_once(self, worker: Worker) -> int:
        """Start the worker, follow its control pipe, return its exit status."""
        read_fd, write_fd = os.pipe()
        spec = WorkerSpec(
            index=worker.index,
            count=self.count,
            parent_pid=os.getpid(),
            control_fd=write_fd,
            grpc_endpoint=self._endpoints["grpc"] or self.config.receivers.grpc.endpoint,
            http_endpoint=self._endpoints["http"] or self.config.receivers.http.endpoint,
        )
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ingestd",
                "run",
                "-c",
                str(self.config_path),
                env={**os.environ, ENV: spec.to_env()},
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(write_fd,),
                # Ctrl-C on a terminal signals the supervisor only; it forwards one drain.
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        worker.process, worker.admin_port, worker.unanswered_checks = process, None, 0
        if self._stopping.is_set():  # the drain began while it was starting: it drains too
            _kill(worker, signal.SIGTERM)
        worker.started_at = time.monotonic()
        worker.last_exit = ""
        self.health.set(worker.component, State.STARTING, f"pid {process.pid}")
        self._count_running()
        log.info("worker_started", worker=worker.index, pid=process.pid)
        control = asyncio.create_task(self._read_control(worker, read_fd))
        code = await process.wait()
        control.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await control
        worker.exit_codes.append(code)
        self._count_running()
        metrics_files.retire(self.metrics_dir, process.pid)
        return code

    async def _read_control(self, worker: Worker, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            async for line in reader:
                with contextlib.suppress(ValueError):
                    event = orjson.loads(line)
                    if event.get("event") == "admin":
                        worker.admin_port = int(event["port"])
        finally:
            transport.close()

    def _count_running(self) -> None:
        WORKERS_RUNNING.set(sum(1 for w in self.workers if _running(w)))

    # -- health -------------------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(w) for w in self.workers))
            if not self.health.started and all(w.ever_ready for w in self.workers):
                self.health.started = True
                log.info("ingestd_ready_to_serve", version=__version__, workers=self.count)
            await asyncio.sleep(self.config.admin.check_interval_s)

    async def _probe(self, worker: Worker) -> None:
        if not _running(worker) or worker.admin_port is None:
            return
        try:
            status, _ = await self._get(worker, "/readyz")
        except (aiohttp.ClientError, TimeoutError) as exc:
            worker.unanswered_checks += 1
            if worker.unanswered_checks >= HUNG_AFTER_CHECKS and not self._draining:
                log.error("worker_hung", worker=worker.index, pid=worker.pid, error=repr(exc))
                worker.last_exit = "hung"
                _kill(worker, signal.SIGKILL)
            return
        worker.unanswered_checks = 0
        if status == 200:
            worker.ever_ready = True
            self.health.set(worker.component, State.OK, f"pid {worker.pid}")
        else:
            self.health.set(worker.component, State.UNAVAILABLE, f"pid {worker.pid}: not ready")

    async def _get(self, worker: Worker, path: str) -> tuple[int, bytes]:
        assert self._session is not None
        url = f"http://127.0.0.1:{worker.admin_port}{path}"
        async with self._session.get(url) as response:
            return response.status, await response.read()

    def _status(self) -> dict[str, Any]:
        return {
            "workers_configured": self.count,
            "endpoints": self._endpoints,
            "metrics_dir": self.metrics_dir,
            "workers": [
                {
                    "index": w.index,
                    "pid": w.pid,
                    "running": _running(w),
                    "admin_port": w.admin_port,
                    "restarts": w.restarts,
                    "last_exit": w.last_exit,
                }
                for w in self.workers
            ],
        }

    async def _worker_status(self) -> dict[str, Any]:
        """Each running worker's own /status."""

        async def one(worker: Worker) -> Any:
            if not _running(worker) or worker.admin_port is None:
                return {"running": False}
            try:
                _, body = await self._get(worker, "/status")
                return orjson.loads(body)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                return {"error": repr(exc)}

        answers = await asyncio.gather(*(one(w) for w in self.workers))
        return {str(w.index): answer for w, answer in zip(self.workers, answers, strict=True)}

    # -- signals ------------------------------------------------------------------------------

    def _watch_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._send_all, signal.SIGHUP)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("signal_received", signal=name, action="drain")
            self._stopping.set()
            return
        log.warning("signal_received", signal=name, action="abort")
        self._send_all(signal.SIGTERM)  # a worker's second signal: it stops at once
        asyncio.get_running_loop().call_later(ABORT_S, self._send_all, signal.SIGKILL)

    def _send_all(self, signum: int) -> None:
        for worker in self.workers:
            if _running(worker):
                _kill(worker, signum)


def _running(worker: Worker) -> bool:
    return worker.process is not None and worker.process.returncode is None


def _kill(worker: Worker, signum: int) -> None:
    assert worker.process is not None
    with contextlib.suppress(ProcessLookupError):
        worker.process.send_signal(signum)


def _exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal_{-code}"
    return f"exit_{code}"


async def supervise(
    config: Config, config_path: Path, count: int, metrics_dir: str, early_signals: list[int]
) -> int:
    """Run *count* workers of *config_path* until a signal; the process's exit code."""
    return await Supervisor(config, config_path, count, metrics_dir).run(early_signals)
