"""The health probe of Redis: a command answered moments ago stands in for its PING."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from ingestd.config import BreakerConfig, RedisConfig
from ingestd.errors import StateUnavailable
from ingestd.state.redis import PROBE_FRESH_S, BreakerState, RedisState
from tests.fakes import FakeClock


class _Client:
    """Answers every command (or fails them all) and records what it was sent.

    It is what RedisState's send path asks of a redis-py client: a pool that makes connections
    (`_Connection`, sharing this recorder) and the reply callbacks."""

    response_callbacks: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.failing = False
        client = self

        class _Pool:
            connection_kwargs: ClassVar[dict[str, Any]] = {}

            @staticmethod
            def connection_class(**kwargs: Any) -> _Connection:
                return _Connection(client)

        self.connection_pool = _Pool()


class _Connection:
    """Decodes each RESP command written to it and answers in order."""

    def __init__(self, client: _Client) -> None:
        self._client = client
        self._replies: list[Any] = []

    async def send_packed_command(self, packed: bytes, check_health: bool = True) -> None:
        if self._client.failing:
            raise ConnectionError("refused")
        for args in _commands(packed):
            self._client.sent.append(args)
            self._replies.append(b"PONG" if args[0] == "PING" else 1)

    async def read_response(self) -> Any:
        return self._replies.pop(0)

    async def disconnect(self, nowait: bool = False) -> None:
        self._replies.clear()


def _commands(packed: bytes) -> list[tuple[Any, ...]]:
    """RESP arrays of bulk strings back to (name, *args); the name as str."""
    out: list[tuple[Any, ...]] = []
    lines = packed.split(b"\r\n")
    i = 0
    while i < len(lines) - 1:
        count = int(lines[i][1:])
        args = [lines[i + 2 + 2 * k] for k in range(count)]
        out.append((args[0].decode(), *args[1:]))
        i += 1 + 2 * count
    return out


def _state(clock: FakeClock) -> tuple[RedisState, _Client]:
    config = RedisConfig(timeout_ms=1000, breaker=BreakerConfig(failures_to_open=1, open_s=5))
    state = RedisState(config, clock=clock)
    client = _Client()
    state._client = client  # type: ignore[assignment]
    return state, client


async def test_probe_pings_only_when_no_command_answered_recently() -> None:
    """First probe pings; one within PROBE_FRESH_S of any answered command sends nothing;
    once that answer is older, the probe pings again."""
    clock = FakeClock()
    state, client = _state(clock)
    await state.probe()
    assert client.sent == [("PING",)]
    await state.command("set", "SET", b"k", b"v")
    clock.t += PROBE_FRESH_S / 2
    await state.probe()
    assert client.sent == [("PING",), ("SET", b"k", b"v")]
    clock.t += PROBE_FRESH_S
    await state.probe()
    assert client.sent[-1] == ("PING",)
    assert len(client.sent) == 3


async def test_probe_pings_while_the_breaker_is_not_closed() -> None:
    """A failure after a recent answer opens the breaker: the probe does not trust the old
    answer, it goes to Redis (and raises while Redis fails or the breaker holds calls)."""
    clock = FakeClock()
    state, client = _state(clock)
    await state.command("set", "SET", b"k", b"v")
    client.failing = True
    with pytest.raises(StateUnavailable):
        await state.command("set", "SET", b"k", b"v")
    assert state.breaker.state is BreakerState.OPEN
    with pytest.raises(StateUnavailable, match="breaker open"):
        await state.probe()
    clock.t += 5  # half-open: the probe is the one call that decides
    client.failing = False
    await state.probe()
    assert client.sent[-1] == ("PING",)
    assert state.breaker.state is BreakerState.CLOSED
