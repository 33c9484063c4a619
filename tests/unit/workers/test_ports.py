"""The supervisor's port reservation against the sockets already on the port (loopback only)."""

from __future__ import annotations

import errno
import socket

import pytest

from ingestd.workers.ports import reserve

TIME_WAIT = "06"  # the state column of /proc/net/tcp
IN_USE = "Address already in use"


def _socket(*, reuse_addr: bool, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_addr))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
    return sock


def _time_waits(port: int) -> int:
    """Sockets in TIME_WAIT whose local port is *port*."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for r in rows if int(r[1].rpartition(":")[2], 16) == port and r[3] == TIME_WAIT)


@pytest.fixture
def port_left_by_a_plain_server() -> int:
    """A port whose server (SO_REUSEADDR, no SO_REUSEPORT, like `workers: 1`) closed its
    connection first and exited: the connection waits in TIME_WAIT on the port."""
    with _socket(reuse_addr=True, reuse_port=False) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()
    client.close()
    assert _time_waits(port) >= 1
    return port


def test_the_kernel_refuses_reuseport_alone_over_a_plain_servers_time_wait(
    port_left_by_a_plain_server: int,
) -> None:
    """The failure fixed here: SO_REUSEPORT alone cannot bind over such a TIME_WAIT."""
    with (
        _socket(reuse_addr=False, reuse_port=True) as sock,
        pytest.raises(OSError, match=IN_USE) as raised,
    ):
        sock.bind(("127.0.0.1", port_left_by_a_plain_server))
    assert raised.value.errno == errno.EADDRINUSE


def test_reserve_binds_over_connections_left_in_time_wait(
    port_left_by_a_plain_server: int,
) -> None:
    """The reservation binds right after a plain server's exit, and workers can listen on it."""
    with (
        reserve("127.0.0.1", port_left_by_a_plain_server) as reserved,
        _socket(reuse_addr=True, reuse_port=True) as worker,
    ):
        assert reserved.getsockname() == ("127.0.0.1", port_left_by_a_plain_server)
        assert reserved.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        worker.bind(("127.0.0.1", port_left_by_a_plain_server))
        worker.listen()


@pytest.mark.parametrize("reuse_addr", [True, False])
def test_a_reserved_port_refuses_other_servers(reuse_addr: bool) -> None:
    """While no worker listens, a server without SO_REUSEPORT (with or without SO_REUSEADDR)
    cannot bind the reserved port."""
    with (
        reserve("127.0.0.1", 0) as reserved,
        _socket(reuse_addr=reuse_addr, reuse_port=False) as other,
    ):
        with pytest.raises(OSError, match=IN_USE) as raised:
            other.bind(reserved.getsockname())
        assert raised.value.errno == errno.EADDRINUSE


def test_reserve_fails_on_a_port_another_server_listens_on() -> None:
    """A live listener without SO_REUSEPORT on the port: EADDRINUSE, as one process gets."""
    with _socket(reuse_addr=True, reuse_port=False) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(OSError, match=IN_USE) as raised:
            reserve("127.0.0.1", listener.getsockname()[1]).close()
    assert raised.value.errno == errno.EADDRINUSE


def test_reserve_resolves_port_zero_to_one_concrete_port() -> None:
    """Port 0 becomes a concrete port, the one every worker is then told."""
    with reserve("127.0.0.1", 0) as reserved:
        assert reserved.getsockname()[1] > 0
