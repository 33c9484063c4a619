"""What a worker process is told by its supervisor, and how it answers (`workers: N > 1`).

The supervisor (`ingestd.workers.supervisor`) starts each worker as a fresh `python -m ingestd run`
with the same config file and one environment variable, INGESTD_WORKER, holding a
`WorkerSpec` as JSON: its index, the concrete receiver endpoints (a port 0 in the config was
resolved once by the supervisor, so that all workers share it), and a pipe to report on.
A worker serves the public ports with SO_REUSEPORT, runs its admin server on a private
loopback port, which it reports through the pipe, and exits (draining) when the supervisor
dies, even by SIGKILL (PR_SET_PDEATHSIG with PARENT_DEATH_SIGNAL).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import glob
import json
import os
import shutil
import signal
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from ingestd.config import Config, TlsConfig
from ingestd.workers import cgroup

ENV = "INGESTD_WORKER"
_PR_SET_PDEATHSIG = 1
# The supervisor's death reaches a worker as this signal, which drains it however often it
# comes, not as SIGTERM, whose second arrival aborts: Linux sends the parent-death signal again
# each time the supervisor thread a worker was handed to exits, so a kill -9 of the
# multi-threaded supervisor delivered SIGTERM two or more times within ms, and workers aborted
# (`aborted: second signal`) instead of draining (2026-12-05, tests/integration/
# test_workers_restart.py).
PARENT_DEATH_SIGNAL = signal.SIGUSR2


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int
    count: int
    parent_pid: int
    # The pipe's write end this worker reports on (one JSON object per line).
    control_fd: int
    grpc_endpoint: str
    http_endpoint: str

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSpec | None:
        text = (os.environ if environ is None else environ).get(ENV)
        return cls(**json.loads(text)) if text else None


def worker_count(config: Config) -> int:
    """`workers`, with auto resolved from the container's CPU quota."""
    return cgroup.auto_workers() if config.workers == "auto" else config.workers


METRICS_DIR_PREFIX = "ingestd-metrics-"


def make_metrics_dir(base: str | None = None) -> tuple[str, int]:
    """A fresh per-run directory for prometheus_client's multiprocess files, locked by us.

    Directories of earlier runs whose lock nobody holds (the supervisor was killed, the
    container restarted with the same /tmp) are removed first. Returns the path and the lock's
    file descriptor, which must stay open for the whole run (it is not inherited by workers).
    """
    base = base or tempfile.gettempdir()
    for stale in glob.glob(os.path.join(base, METRICS_DIR_PREFIX + "*")):
        try:
            fd = os.open(os.path.join(stale, ".lock"), os.O_RDWR)
        except OSError:
            continue  # being created right now, or not ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running ingestd's
        finally:
            os.close(fd)
        shutil.rmtree(stale, ignore_errors=True)
    path = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX, dir=base)
    lock = os.open(os.path.join(path, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return path, lock


def worker_config(config: Config, spec: WorkerSpec) -> Config:
    """The config one worker runs: shared receiver ports, a private admin port."""
    receivers = config.receivers.model_copy(
        update={
            "grpc": config.receivers.grpc.model_copy(update={"endpoint": spec.grpc_endpoint}),
            "http": config.receivers.http.model_copy(update={"endpoint": spec.http_endpoint}),
        }
    )
    # Loopback, asked only by the supervisor (plain HTTP, no token); the public one has both.
    admin = config.admin.model_copy(
        update={
            "endpoint": "127.0.0.1:0",
            "tls": TlsConfig(),
            "status_token": None,
            "status_token_sha256": None,
            "metrics_need_token": False,
        }
    )
    return config.model_copy(update={"receivers": receivers, "admin": admin})


def die_with_parent(parent_pid: int) -> None:
    """Get PARENT_DEATH_SIGNAL (and so drain) when the supervisor dies; now if it already has.

    The caller handles PARENT_DEATH_SIGNAL first (its default action ends the process).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), PARENT_DEATH_SIGNAL)


class Control:
    """The worker's end of the pipe to its supervisor."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def send(self, **event: Any) -> None:
        """Write one event; a supervisor that is gone is ignored (the worker drains anyway)."""
        with contextlib.suppress(OSError):
            os.write(self._fd, json.dumps(event).encode() + b"\n")
