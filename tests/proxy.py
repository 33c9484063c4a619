"""A TCP proxy for outage tests: refuse connections, cut them, slow them, cut one at COMMIT.

`client (ingestd) <-> Proxy <-> server (PostgreSQL)`

Besides plain TCP faults it reads the PostgreSQL frontend protocol on the client's side, so a
test can cut a connection exactly when the client sends COMMIT:
- "before": the COMMIT is dropped and both sides are closed (the transaction aborts);
- "during": the COMMIT is forwarded and both sides are reset at once (the server may or may
  not have read it: the outcome is unknown to everybody);
- "after": the COMMIT is forwarded, the server's answer is awaited and dropped, and both sides
  are closed (the transaction committed; the client cannot know).
Use a DSN with `sslmode=disable` through the proxy: the protocol cannot be read inside TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal

CommitCut = Literal["before", "during", "after"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


class Proxy:
    """Forwards 127.0.0.1:<port> to *upstream*; every fault is switched on by the test."""

    def __init__(self, upstream_host: str, upstream_port: int, *, postgres: bool = True) -> None:
        self.upstream = (upstream_host, upstream_port)
        # Off for other protocols (HTTP, Redis): bytes are forwarded as they come, since the
        # PostgreSQL framing would read them as a huge startup message and wait forever.
        self.postgres = postgres
        self.latency_s = 0.0
        self.refusing = False
        self.port = 0
        self.accepted = 0
        self.commits_seen = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._cut: CommitCut | None = None
        self._cuts_left = 0
        self.cut_done = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self.cut_all()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def dsn(self, dsn: str) -> str:
        """*dsn* pointed at this proxy, without TLS (so COMMIT can be seen)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            dsn, host="127.0.0.1", port=str(self.port), sslmode="disable", gssencmode="disable"
        )

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are accepted and closed at once."""
        self.refusing = on

    async def cut_all(self) -> int:
        """Reset every live connection, both sides; return how many were cut."""
        links = list(self._links)
        for link in links:
            link.reset()
        await asyncio.sleep(0)
        return len(links)

    def cut_at_commit(self, when: CommitCut, times: int = 1) -> asyncio.Event:
        """Cut the next *times* connections that send COMMIT, *when* relative to it.

        The returned event is set once the last of them was cut.
        """
        self._cut, self._cuts_left = when, times
        self.cut_done = asyncio.Event()
        return self.cut_done

    def live(self) -> int:
        return len(self._links)

    # -- per connection ---------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        link = _Link(self, writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._client_to_server(link, reader, up_writer),
                self._server_to_client(link, up_reader, writer),
            )
        finally:
            link.reset()
            self._links.discard(link)

    def _take_commit_cut(self) -> CommitCut | None:
        self.commits_seen += 1
        if self._cut is None or self._cuts_left <= 0:
            return None
        self._cuts_left -= 1
        return self._cut

    def _cut_happened(self) -> None:
        if self._cuts_left <= 0:
            self._cut = None
            self.cut_done.set()

    async def _client_to_server(
        self, link: _Link, reader: asyncio.StreamReader, out: asyncio.StreamWriter
    ) -> None:
        frames = _FrontendFrames() if self.postgres else _RawChunks()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                for frame, is_commit in frames.feed(data):
                    cut = self._take_commit_cut() if is_commit else None
                    if cut == "before":
                        link.reset()
                        self._cut_happened()
                        return
                    await self._delay()
                    out.write(frame)
                    await out.drain()
                    if cut == "during":
                        link.reset()
                        self._cut_happened()
                        return
                    if cut == "after":
                        link.drop_next_reply = True
        link.close_side(out)

    async def _server_to_client(
        self, link: _Link, reader: asyncio.StreamReader, out: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if link.drop_next_reply:
                    link.reset()
                    self._cut_happened()
                    return
                await self._delay()
                out.write(data)
                await out.drain()
        link.close_side(out)

    async def _delay(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)


class _Link:
    """One proxied connection: the client's and the server's sockets."""

    def __init__(
        self, proxy: Proxy, client: asyncio.StreamWriter, server: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.drop_next_reply = False

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.server)

    def close_side(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0): unsent data is dropped, the peer sees ECONNRESET."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _RawChunks:
    """Any protocol: each chunk read is forwarded as it is, never a COMMIT."""

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        return [(data, False)]


class _FrontendFrames:
    """Splits the client's byte stream into whole protocol messages and spots COMMIT."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._startup = True

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        self._buffer += data
        frames: list[tuple[bytes, bool]] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> tuple[bytes, bool] | None:
        buffer = self._buffer
        if self._startup:
            # Untyped: Int32 length (itself included) + Int32 code + rest.
            if len(buffer) < 8:
                return None
            (length,) = struct.unpack_from(">i", buffer)
            if len(buffer) < length:
                return None
            (code,) = struct.unpack_from(">i", buffer, 4)
            if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                self._startup = False
            return self._take(length), False
        if len(buffer) < 5:
            return None
        (length,) = struct.unpack_from(">i", buffer, 1)
        if len(buffer) < length + 1:
            return None
        frame = self._take(length + 1)
        return frame, _is_commit(frame)

    def _take(self, n: int) -> bytes:
        frame = bytes(self._buffer[:n])
        del self._buffer[:n]
        return frame


def _is_commit(frame: bytes) -> bool:
    kind, body = frame[:1], frame[5:]
    if kind == b"Q":  # simple query: the text
        text = body.rstrip(b"\x00")
    elif kind == b"P":  # Parse: statement name, then the text
        _name, _, rest = body.partition(b"\x00")
        text = rest.partition(b"\x00")[0]
    else:
        return False
    return text.strip().rstrip(b";").strip().upper() in (b"COMMIT", b"END", b"COMMIT WORK")
