"""The process sampler counts this process's TCP connections by peer, as the kernel lists them."""

from __future__ import annotations

import socket

import psutil
import pytest

from ingestd import config
from ingestd.observe import procfs
from ingestd.observe.process import ProcessSampler

pytestmark = pytest.mark.integration


def test_connections_are_counted_by_local_and_remote_port() -> None:
    """An accepted connection on a receiver's port counts for that receiver; one we opened to
    a configured server's port counts for that server; the sampler's lifecycle holds."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    try:
        cfg = config.parse(
            f"redis: {{url: 'redis://127.0.0.1:{port}/0'}}\n"
            "sinks: {timescale: {enabled: false}, elasticsearch: {enabled: false}}"
        )
        sampler = ProcessSampler(cfg, lambda: {"grpc": port, "http": None})
        sampler.sample()
        assert sampler.connections["grpc"] == 1  # the accepted side: local port = receiver's
        assert sampler.connections["redis"] == 1  # our side: remote port = Redis's
        assert sampler.status()["tcp_connections"]["other"] >= 0
    finally:
        for sock in (client, accepted, listener):
            sock.close()


def test_established_connections_match_what_psutil_reads_from_proc_net() -> None:
    """The sampler's own-socket reading lists the same established TCP connections (both sides
    of a loopback pair, IPv4 and IPv6) as psutil's parse of /proc/net/tcp*; a listener is not
    one."""
    pairs = []
    for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
        listener = socket.create_server((host, 0), family=family)
        client = socket.create_connection((host, listener.getsockname()[1]))
        accepted, _ = listener.accept()
        pairs.append((listener, client, accepted))
    try:
        mine = sorted(procfs.established_tcp())
        theirs = sorted(
            (c.laddr.port, c.raddr.port)
            for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.raddr
        )
        assert mine == theirs
        for listener, client, _ in pairs:
            port = listener.getsockname()[1]
            assert (port, client.getsockname()[1]) in mine  # the accepted side
            assert (client.getsockname()[1], port) in mine  # the connecting side
        assert all(remote != 0 for _, remote in mine)  # no listener
    finally:
        for trio in pairs:
            for sock in trio:
                sock.close()
