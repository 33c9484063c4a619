"""RedisState's send path on fake connections (no server): replies, errors, dead connections."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest
from redis.exceptions import DataError, ResponseError

from ingestd.config import RedisConfig
from ingestd.errors import StateUnavailable
from ingestd.state.redis import RedisState


class _Connection:
    """Answers each command of a write with the next of *replies* (an exception is raised)."""

    made: ClassVar[list[_Connection]] = []
    replies: ClassVar[list[Any]] = []
    write_error: ClassVar[BaseException | None] = None

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.written: list[bytes] = []
        self.disconnects = 0
        _Connection.made.append(self)

    async def send_packed_command(self, packed: bytes, check_health: bool = True) -> None:
        if self.write_error is not None:
            raise self.write_error
        self.written.append(packed)

    async def read_response(self) -> Any:
        reply = _Connection.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        if reply == "hang":
            await asyncio.sleep(3600)
        return reply

    async def disconnect(self, nowait: bool = False) -> None:
        self.disconnects += 1


class _Pool:
    connection_class = _Connection
    connection_kwargs: ClassVar[dict[str, Any]] = {"host": "redis.test", "socket_timeout": 0.5}


class _Client:
    connection_pool = _Pool()
    # redis-py's reply callback for SET: OK -> True, unless GET asked for the old value.
    response_callbacks: ClassVar[dict[str, Any]] = {
        "SET": lambda r, **o: r if o.get("get") else r == b"OK"
    }

    async def aclose(self) -> None:
        """Nothing to close."""


@pytest.fixture
def state() -> RedisState:
    _Connection.made = []
    _Connection.replies = []
    _Connection.write_error = None
    redis = RedisState(RedisConfig(timeout_ms=200))
    redis._client = _Client()  # type: ignore[assignment]
    return redis


async def test_commands_of_one_turn_share_one_connection_and_write(state: RedisState) -> None:
    """Concurrent commands go out in one write; replies pass redis-py's reply callbacks."""
    _Connection.replies = [b"OK", None, b"PONG"]
    got = await asyncio.gather(
        state.command("a", "SET", b"k", b"v"),
        state.command("b", "SET", b"k2", b"v", "NX", "GET", get=True),
        state.command("c", "PING"),
    )
    assert got == [True, None, b"PONG"]
    (connection,) = _Connection.made
    assert connection.written == [
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
        b"*5\r\n$3\r\nSET\r\n$2\r\nk2\r\n$1\r\nv\r\n$2\r\nNX\r\n$3\r\nGET\r\n"
        b"*1\r\n$4\r\nPING\r\n"
    ]
    # Connections carry no socket timeout of their own: the exchange is bounded as a whole.
    assert connection.kwargs == {"host": "redis.test", "socket_timeout": None}
    _Connection.replies = [b"PONG"]
    assert await state.command("d", "PING") == b"PONG"
    assert len(_Connection.made) == 1  # reused after a complete exchange


async def test_an_error_reply_fails_its_command_only(state: RedisState) -> None:
    """A command's error reply is that command's failure; the connection stays in use."""
    _Connection.replies = [ResponseError("WRONGTYPE"), b"PONG"]
    bad, good = await asyncio.gather(
        state.command("a", "GET", b"k"), state.command("b", "PING"), return_exceptions=True
    )
    assert isinstance(bad, StateUnavailable)
    assert "WRONGTYPE" in str(bad)
    assert good == b"PONG"
    assert state._idle == _Connection.made


async def test_a_hung_reply_times_out_and_the_connection_is_closed(state: RedisState) -> None:
    """No answer within timeout_ms: StateUnavailable, and the half-read connection is dropped."""
    _Connection.replies = ["hang"]
    with pytest.raises(StateUnavailable, match="timed out"):
        await state.command("a", "PING")
    await asyncio.gather(*state._sending)
    assert state._idle == []
    assert _Connection.made[0].disconnects >= 1


async def test_send_counts_its_outcome_without_a_waiter(state: RedisState) -> None:
    """`send` queues a command nobody awaits; its failure still reaches the breaker."""
    _Connection.replies = [ResponseError("OOM")]
    state.send("dedup_finish", "SET", b"k", b"D")
    await asyncio.sleep(0)
    await asyncio.gather(*state._sending)
    assert state.breaker.failures == 1
    _Connection.replies = [b"OK"]
    state.send("dedup_finish", "SET", b"k", b"D")
    await state.stop(deadline=time.monotonic() + 5)
    assert state.breaker.failures == 0
    assert _Connection.made[0].written[-1] == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nD\r\n"


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    """The RESP bytes of a command are redis-py's own, for every argument type used."""
    from redis.connection import Encoder, PythonRespSerializer

    from ingestd.state.redis import _pack

    serializer = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    for args in [
        ("SET", b"d:\x00\xff", b"Fhost:1", "NX", "GET", "PX", 35_000),
        ("EVALSHA", "0" * 40, 2, b"a", b"b", repr(1.5), 2.25),
        ("HSET", "ключ", "x" * 7000, -3),
    ]:
        assert _pack(args) == b"".join(serializer.pack(*args))
    with pytest.raises(DataError):
        _pack(("SET", b"k", True))


async def test_closed_transport_fails_the_call_and_leaves_no_task_exception(
    state: RedisState,
) -> None:
    """A RuntimeError from a dead transport is a lost connection: StateUnavailable, closed."""
    _Connection.write_error = RuntimeError("unable to perform operation on <TCPTransport closed>")
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        with pytest.raises(StateUnavailable, match="connection lost"):
            await state.command("ping", "PING")
        await asyncio.gather(*state._sending)
    finally:
        loop.set_exception_handler(previous)
    assert _Connection.made[0].disconnects >= 1
    assert state._idle == []
    assert unretrieved == []
