"""Worker plumbing without processes: the spec, a worker's config, the metrics directory."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from ingestd import config
from ingestd.observe import metrics_files
from ingestd.workers.worker import (
    PARENT_DEATH_SIGNAL,
    WorkerSpec,
    make_metrics_dir,
    worker_config,
    worker_count,
)


def test_spec_travels_through_the_environment() -> None:
    """A WorkerSpec survives its JSON environment variable; no variable, no worker."""
    spec = WorkerSpec(1, 2, 42, 7, "127.0.0.1:4317", "127.0.0.1:4318")
    assert WorkerSpec.from_env({"INGESTD_WORKER": spec.to_env()}) == spec
    assert WorkerSpec.from_env({}) is None


def test_worker_config_shares_receiver_ports_and_keeps_admin_private() -> None:
    """A worker listens on the supervisor's resolved ports; its admin on a loopback port 0."""
    base = config.parse("workers: 2\nreceivers: {grpc: {endpoint: '0.0.0.0:0'}}")
    spec = WorkerSpec(0, 2, 1, 3, "0.0.0.0:41000", "0.0.0.0:4318")
    mine = worker_config(base, spec)
    assert mine.receivers.grpc.endpoint == "0.0.0.0:41000"
    assert mine.receivers.http.endpoint == "0.0.0.0:4318"
    assert mine.admin.endpoint == "127.0.0.1:0"
    assert mine.receivers.grpc.max_recv_msg_size_mib == base.receivers.grpc.max_recv_msg_size_mib


def test_worker_count_is_the_number_or_the_cpus() -> None:
    """workers: 3 is 3; auto is at least 1 and at most the CPUs this process may use."""
    assert worker_count(config.parse("workers: 3")) == 3
    assert 1 <= worker_count(config.parse("workers: auto")) <= len(os.sched_getaffinity(0))


def test_stale_metrics_dirs_are_removed_and_held_ones_kept(tmp_path: Path) -> None:
    """A directory whose lock nobody holds is an earlier run's: removed. A held one stays."""
    stale = tmp_path / "ingestd-metrics-old"
    stale.mkdir()
    (stale / ".lock").touch()
    (stale / "counter_1.db").touch()
    held, held_lock = make_metrics_dir(str(tmp_path))
    assert not stale.exists()
    fresh, fresh_lock = make_metrics_dir(str(tmp_path))
    assert Path(held).exists()
    assert Path(fresh).exists()
    assert held != fresh
    for fd in (held_lock, fresh_lock):
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def test_a_dead_workers_counters_are_archived_not_lost(tmp_path: Path) -> None:
    """Retiring a dead pid folds its counters into the archive and drops its live gauges."""
    key = mmap_key("ingestd_x", "ingestd_x_total", ["a"], ["1"], "help")
    for pid, value in ((101, 5.0), (102, 7.0)):
        counter = MmapedDict(str(tmp_path / f"counter_{pid}.db"))
        counter.write_value(key, value, 0.0)
        counter.close()
    gauge_key = mmap_key("ingestd_g", "ingestd_g", [], [], "help")
    gauge = MmapedDict(str(tmp_path / "gauge_livesum_101.db"))
    gauge.write_value(gauge_key, 3.0, 0.0)
    gauge.close()

    registry = metrics_files.aggregating_registry(str(tmp_path))
    assert registry.get_sample_value("ingestd_x_total", {"a": "1"}) == 12.0
    metrics_files.retire(str(tmp_path), 101)
    metrics_files.retire(str(tmp_path), 102)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_archive.db"]
    assert registry.get_sample_value("ingestd_x_total", {"a": "1"}) == 12.0
    assert registry.get_sample_value("ingestd_g") is None


def test_a_worker_asks_for_the_parent_death_signal_not_sigterm() -> None:
    """die_with_parent sets PR_SET_PDEATHSIG to PARENT_DEATH_SIGNAL (a repeated SIGTERM would
    abort the drain); checked in a child process, read back with PR_GET_PDEATHSIG."""
    script = (
        "import ctypes, os, signal\n"
        "from ingestd.workers.worker import PARENT_DEATH_SIGNAL, die_with_parent\n"
        "signal.signal(PARENT_DEATH_SIGNAL, signal.SIG_IGN)\n"
        "die_with_parent(os.getppid())\n"
        "got = ctypes.c_int()\n"
        "ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(got))\n"
        "print(got.value)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == PARENT_DEATH_SIGNAL == signal.SIGUSR2
