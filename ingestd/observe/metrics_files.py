"""The files behind /metrics with `workers: N > 1` (prometheus_client's multiprocess mode).

Every process writes its values to `<kind>_<pid>.db` in the run's directory; the supervisor
reads them all for each scrape. prometheus_client's multiprocess API is untyped; this module
is the one place that calls it.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead


def aggregating_registry(path: str) -> CollectorRegistry:
    """A registry whose collection adds up every process's files in *path*."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def retire(path: str, pid: int) -> None:
    """After process *pid* ended: drop its gauges, fold its counters and histograms into one
    archive file (totals stay monotonic, without one more file per restart)."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    for kind in ("counter", "histogram"):
        source = os.path.join(path, f"{kind}_{pid}.db")
        if not os.path.exists(source):
            continue
        archive = MmapedDict(os.path.join(path, f"{kind}_archive.db"))  # type: ignore[no-untyped-call]
        try:
            values = MmapedDict.read_all_values_from_file(source)  # type: ignore[no-untyped-call]
            for key, value, timestamp, _ in values:
                total, _ = archive.read_value(key)  # type: ignore[no-untyped-call]
                archive.write_value(key, total + value, timestamp)  # type: ignore[no-untyped-call]
        finally:
            archive.close()  # type: ignore[no-untyped-call]
        os.remove(source)
