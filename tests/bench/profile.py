"""Where ingestd's CPU goes during a measured window: py-spy samples of its processes.

`python -m tests.bench --profile` runs `py-spy record --nonblocking` on the ingestd process tree
for the window of each throughput and receive run and keeps, per run, the raw samples (in the
run's work folder) and the frames with the most own and inclusive time (in the JSON report).
py-spy is a dev dependency; it needs ptrace rights over the process (root, or
kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

_RATE_HZ = 200


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Sampler:
    """A running `py-spy record` over *pid* (and its subprocesses) for *seconds*."""

    def __init__(self, pid: int, seconds: float, raw_path: Path) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.raw_path = raw_path
        self.proc = subprocess.Popen(
            [
                exe, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
                "--rate", str(_RATE_HZ), "--duration", str(max(1, round(seconds))),
                "--format", "raw", "--output", str(raw_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def summary(self, top: int = 25) -> dict[str, Any]:
        """Wait for py-spy; return the hottest frames by own and by inclusive time."""
        _, err = self.proc.communicate(timeout=120)
        if self.proc.returncode != 0 or not self.raw_path.exists():
            return {"error": err.decode(errors="replace")[-500:]}
        return summarize(self.raw_path.read_text().splitlines(), top)


def summarize(lines: list[str], top: int = 25) -> dict[str, Any]:
    """py-spy's raw (folded) stacks -> share of samples per frame, own and inclusive."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n

    def ranked(counts: dict[str, int]) -> list[tuple[float, str]]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [(round(n / max(1, total), 4), frame[:160]) for frame, n in best]

    return {"samples": total, "own": ranked(own), "inclusive": ranked(inclusive)}
