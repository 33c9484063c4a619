"""The process sampler counts this process's TCP connections by peer, as the kernel lists them."""

from __future__ import annotations

import socket

import pytest

from ingestd import config
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
