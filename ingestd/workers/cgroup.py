"""What the container gives this process: its CPU quota and memory limit, read from cgroups.

`workers: auto` follows the CPU quota and `memory.max_rss_mib: auto` the memory limit, not the
host's cores and RAM (a pod limited to 2 CPUs on a 64-core node must not start 64 workers).
Both cgroup v2 (`cpu.max`, `memory.max`) and v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`,
`memory.limit_in_bytes`) are read; the effective limit is the smallest one on the way from the
process's cgroup up to the root of the mounted hierarchy, as the kernel enforces it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

Reader = Callable[[str], str | None]

# cgroup v1 writes "no limit" as the largest page-aligned int64.
_V1_UNLIMITED = 1 << 62


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


@dataclass(frozen=True, slots=True)
class _Hierarchy:
    version: int
    mount_root: str  # the cgroup path mounted at mount_point
    mount_point: str
    path: str  # this process's cgroup path in the hierarchy


def _hierarchies(read: Reader, controller: str) -> list[_Hierarchy]:
    """The mounted hierarchies that hold *controller* for this process (v1 first, then v2)."""
    cgroups = read("/proc/self/cgroup") or ""
    mountinfo = read("/proc/self/mountinfo") or ""
    paths_v1: dict[str, str] = {}
    path_v2: str | None = None
    for line in cgroups.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            path_v2 = path
        for name in controllers.split(","):
            paths_v1[name] = path
    found: list[_Hierarchy] = []
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        parts, extra = fields.split(), tail.split()
        if len(parts) < 5 or len(extra) < 3:
            continue
        fstype, options = extra[0], extra[2].split(",")
        if fstype == "cgroup" and controller in options and controller in paths_v1:
            found.append(_Hierarchy(1, parts[3], parts[4], paths_v1[controller]))
        elif fstype == "cgroup2" and path_v2 is not None:
            found.append(_Hierarchy(2, parts[3], parts[4], path_v2))
    return found


def _dirs(h: _Hierarchy) -> Iterator[str]:
    """The directories from the process's cgroup up to the mount point."""
    path = PurePosixPath(h.path)
    root = PurePosixPath(h.mount_root)
    # Inside a cgroup namespace the path may be shown relative to a root we cannot see.
    relative = path.relative_to(root) if path.is_relative_to(root) else PurePosixPath(".")
    here = PurePosixPath(h.mount_point) / relative
    while True:
        yield str(here)
        if str(here) == h.mount_point or here == here.parent:
            return
        here = here.parent


def cpu_quota(read: Reader = _read) -> float | None:
    """CPUs the cgroup quota allows (2.5 for 250ms per 100ms), None when there is no quota."""
    best: float | None = None
    for h in _hierarchies(read, "cpu"):
        for d in _dirs(h):
            if h.version == 2:
                text = read(f"{d}/cpu.max")
                if text is None:
                    continue
                quota, _, period = text.strip().partition(" ")
                if quota == "max" or not period:
                    continue
                cpus = int(quota) / int(period)
            else:
                quota_text = read(f"{d}/cpu.cfs_quota_us")
                period_text = read(f"{d}/cpu.cfs_period_us")
                if quota_text is None or period_text is None or int(quota_text) <= 0:
                    continue
                cpus = int(quota_text) / int(period_text)
            best = cpus if best is None else min(best, cpus)
    return best


def memory_limit(read: Reader = _read) -> int | None:
    """Bytes the memory cgroup allows, None when unlimited."""
    best: int | None = None
    for h in _hierarchies(read, "memory"):
        name = "memory.max" if h.version == 2 else "memory.limit_in_bytes"
        for d in _dirs(h):
            text = read(f"{d}/{name}")
            if text is None or text.strip() == "max":
                continue
            limit = int(text)
            if limit >= _V1_UNLIMITED:
                continue
            best = limit if best is None else min(best, limit)
    return best


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the host's core count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_workers(read: Reader = _read, cpus: int | None = None) -> int:
    """`workers: auto`: whole CPUs of the quota, at most the usable CPUs, at least 1.

    Rounded down, as Go's automaxprocs does: a third worker on a 2.5-CPU quota would get the
    whole container throttled whenever all three are busy.
    """
    allowed = cpus if cpus is not None else usable_cpus()
    quota = cpu_quota(read)
    if quota is None:
        return max(1, allowed)
    return max(1, min(allowed, math.floor(quota + 1e-9)))
