"""The supervisor's hold on the receiver ports (`workers: N > 1`), apart from the processes.

The supervisor binds each receiver endpoint once, without listening, so that a port 0 becomes
one concrete port every worker shares (SO_REUSEPORT) and no other program takes the port while
the workers restart. Two kinds of socket may already sit on that port when it starts:

- a listener without SO_REUSEPORT (another program, a `workers: 1` ingestd still running):
  the bind must fail (EADDRINUSE), as a single process's would;
- connections of an earlier server on the port, left in TIME_WAIT for 60 s after it closed
  them or was killed. They carry the socket options of the listener they were accepted on;
  Linux lets a bind over them only if both sockets have SO_REUSEADDR, or both SO_REUSEPORT.
  A single-process ingestd (and most servers) listens with SO_REUSEADDR and without
  SO_REUSEPORT, so SO_REUSEPORT alone fails over its connections for a minute after a restart
  (`workers: 1` -> `workers: 2` on the same port; the chaos run's kill-worker after
  kill-daemon, docs/reports/chaos-2026-12-04.md).

So the socket binds with both options, then drops SO_REUSEADDR: when another socket binds or
listens on the port, Linux looks at the options the bound sockets have then, and a reservation
that kept SO_REUSEADDR would let any SO_REUSEADDR server (most of them) bind and listen on the
port while none of our workers listens. Without it, only a same-user SO_REUSEPORT socket can
join (tests/unit/workers/test_ports.py; checked on Linux 6.18, 2026-12-05).
"""

from __future__ import annotations

import socket


def reserve(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for workers to share (SO_REUSEPORT), not listening.

    Raises OSError (EADDRINUSE) when a listener without SO_REUSEPORT, or of another user,
    holds the port; earlier connections in TIME_WAIT do not block it. The caller owns the
    socket and closes it when the workers are gone.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    except OSError:
        sock.close()
        raise
    return sock
