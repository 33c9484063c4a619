"""A supervisor started on ports a killed ingestd just served: a kill -9'd supervisor's workers
exit and free the ports, and `workers: 2` starts at once where `workers: 1` was killed under
load (its connections still in TIME_WAIT on the ports; the chaos run's kill-daemon then
kill-worker)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import IngestdProcess, base_config, deep_merge
from tests.integration.conftest import Stack
from tests.integration.ops_support import Exporter, status_json
from tests.integration.test_workers import export_for

pytestmark = pytest.mark.integration

GRACE_S = 3.0
LISTEN, TIME_WAIT = "0A", "06"  # the state column of /proc/net/tcp


def _config(stack: Stack, timescale_db: str, workers: int, ports: tuple[int, int]) -> Any:
    grpc_port, http_port = ports
    return deep_merge(
        base_config(timescale_db, stack.es_url, stack.redis_url),
        {
            "workers": workers,
            "receivers": {
                "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                "http": {"endpoint": f"127.0.0.1:{http_port}"},
            },
            "sinks": {"elasticsearch": {"enabled": False}},
            "shutdown": {"grace_s": GRACE_S},
        },
    )


def _sockets(port: int, state: str) -> int:
    """TCP sockets in *state* whose local port is *port* (IPv6 too: grpc listens on 127.0.0.1
    through an IPv6 socket, ::ffff:127.0.0.1, which only /proc/net/tcp6 lists)."""
    rows: list[list[str]] = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as table:
            rows += [line.split() for line in table.readlines()[1:]]
    return sum(1 for r in rows if int(r[1].rpartition(":")[2], 16) == port and r[3] == state)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive after *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _start(config: Any, workdir: Path) -> IngestdProcess:
    workdir.mkdir()
    return IngestdProcess(config, workdir)


async def _serve_then_kill9(proc: IngestdProcess) -> tuple[int, int]:
    """Wait until ready, kill -9 the daemon 1 s into 2 s of gRPC exports, with HTTP keep-alive
    connections open (the killed side closes those first: TIME_WAIT); its two ports."""
    await asyncio.to_thread(proc.wait_ready)
    ports = (proc.port_of("grpc_listening"), proc.port_of("http_receiver_listening"))
    ex = Exporter(f"127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            request = ex.request(5)
            ids = [s.span_id for s in request.resource_spans[0].scope_spans[0].spans]
            await ex.http_once(session, request.SerializeToString(), ids)
        load = asyncio.create_task(export_for(ex, 2.0))
        await asyncio.sleep(1.0)
        os.kill(proc.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.proc.wait, 10)
        await load
    assert any(a.ok and a.transport == "http" for a in ex.answers)
    assert any(a.ok and a.transport == "grpc" for a in ex.answers)
    return ports


async def _serves(config: Any, workdir: Path, ports: tuple[int, int]) -> bool:
    """Start an ingestd on *ports*, export to it for a second, stop it cleanly: whether any
    export was answered OK (and it exited 0)."""
    proc = _start(config, workdir)
    try:
        await asyncio.to_thread(proc.wait_ready)
        ex = Exporter(f"127.0.0.1:{ports[0]}")
        await export_for(ex, 1.0)
        assert await asyncio.to_thread(proc.terminate) == 0
    finally:
        proc.kill()
    return any(a.ok for a in ex.answers)


async def test_a_kill9_supervisors_workers_exit_and_free_the_ports(
    stack: Stack, timescale_db: str, tmp_path: Path
) -> None:
    """kill -9 of the supervisor: each worker notices (parent-death signal, delivered several
    times), drains once without aborting and exits within the grace period; no listener is
    left on the ports, and a new supervisor serves them at once."""
    first = _start(_config(stack, timescale_db, 2, (0, 0)), tmp_path / "first")
    pids: list[int] = []
    try:
        await asyncio.to_thread(first.wait_ready)
        status = await asyncio.to_thread(status_json, first)
        pids = [int(w["pid"]) for w in status["supervisor"]["workers"]]
        ports = await _serve_then_kill9(first)
        left = await asyncio.to_thread(_wait_gone, pids, GRACE_S + 10.0)
        await asyncio.to_thread(first.terminate)  # gone already: reads the workers' last lines
    finally:
        first.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert len(pids) == 2
    assert left == [], f"workers outlived their supervisor: {left}"
    assert [_sockets(p, LISTEN) for p in ports] == [0, 0]
    said = {(e.get("worker"), e.get("event"), e.get("action")) for e in first.events}
    assert {(w, n) for w, n, a in said if n == "aborted" or a == "abort"} == set()
    for index in (0, 1):
        assert (index, "supervisor_gone", "drain") in said
        assert (index, "stopped", None) in said

    assert await _serves(_config(stack, timescale_db, 2, ports), tmp_path / "second", ports)


async def test_workers_start_on_the_ports_of_a_killed_single_process(
    stack: Stack, timescale_db: str, tmp_path: Path
) -> None:
    """`workers: 1` kill -9'd under load leaves its connections in TIME_WAIT on the ports (no
    SO_REUSEPORT on them); `workers: 2` started right after binds over them and serves."""
    single = _start(_config(stack, timescale_db, 1, (0, 0)), tmp_path / "single")
    try:
        ports = await _serve_then_kill9(single)
    finally:
        single.kill()
    # The precondition of the old EADDRINUSE: the killed server's side of its connections.
    assert _sockets(ports[1], TIME_WAIT) > 0

    assert await _serves(_config(stack, timescale_db, 2, ports), tmp_path / "workers", ports)
