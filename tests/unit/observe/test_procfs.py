"""The sampler's cheap readings of this process: CPU seconds and open files."""

from __future__ import annotations

import os
import socket

from ingestd.observe import procfs


def test_open_fds_counts_descriptors_as_they_open_and_close() -> None:
    """A pipe opens two descriptors and closing it gives them back."""
    before = procfs.open_fds()
    read_fd, write_fd = os.pipe()
    try:
        assert procfs.open_fds() == before + 2
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert procfs.open_fds() == before


def test_cpu_seconds_grow_with_work() -> None:
    """CPU seconds are this process's user + system time and grow while it computes."""
    before = procfs.cpu_seconds()
    total = 0
    while procfs.cpu_seconds() - before < 0.02:
        total += sum(range(10_000))
    assert total > 0
    assert procfs.cpu_seconds() > before


def test_no_tcp_connection_is_seen_in_a_pipe() -> None:
    """Descriptors that are not TCP sockets (a pipe, a Unix socket pair) are never counted."""
    before = procfs.established_tcp()
    left, right = socket.socketpair()
    read_fd, write_fd = os.pipe()
    try:
        assert procfs.established_tcp() == before
    finally:
        for fd in (read_fd, write_fd):
            os.close(fd)
        left.close()
        right.close()


def test_a_blocking_socket_is_left_blocking_under_a_default_timeout() -> None:
    """With socket.setdefaulttimeout set, wrapping a duplicate would turn the owner's blocking
    socket non-blocking (the flag is shared): such a socket is skipped and keeps its mode."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5.0)
    try:
        owned = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        owned.setblocking(True)
        procfs.established_tcp()
        assert os.get_blocking(owned.fileno())
        owned.close()
    finally:
        socket.setdefaulttimeout(previous)
