"""The health probe of Redis: a command answered moments ago stands in for its PING."""

from __future__ import annotations

from typing import Any

import pytest

from ingestd.config import BreakerConfig, RedisConfig
from ingestd.errors import StateUnavailable
from ingestd.state.redis import PROBE_FRESH_S, BreakerState, RedisState
from tests.fakes import FakeClock


class _Client:
    """Answers every command (or fails them all) and records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.failing = False

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(args)
        if self.failing:
            raise ConnectionError("refused")
        return b"PONG" if args[0] == "PING" else 1


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
