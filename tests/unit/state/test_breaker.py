"""The Redis circuit breaker: opening, cool-down, half-open probe, closing, incident counting."""

from __future__ import annotations

from ingestd.config import BreakerConfig
from ingestd.state.redis import Breaker, BreakerState
from tests.fakes import FakeClock

CONFIG = BreakerConfig(failures_to_open=3, open_s=5.0)


def make() -> tuple[Breaker, FakeClock, list[BreakerState]]:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = Breaker(CONFIG, clock, lambda state, _error: changes.append(state))
    return breaker, clock, changes


def fail_sequentially(breaker: Breaker, clock: FakeClock, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        started = clock.now()
        clock.t += 0.001
        breaker.failure(started, "ConnectionError")


def test_opens_after_n_consecutive_failures() -> None:
    """N failed calls in a row open the breaker; no call is allowed while it is open."""
    breaker, clock, changes = make()
    fail_sequentially(breaker, clock, 2)
    assert breaker.state is BreakerState.CLOSED
    fail_sequentially(breaker, clock, 1)
    assert breaker.state is BreakerState.OPEN
    assert changes == [BreakerState.OPEN]
    assert not breaker.allow()


def test_a_success_resets_the_count() -> None:
    """Failures separated by a success do not add up to opening."""
    breaker, clock, _ = make()
    fail_sequentially(breaker, clock, 2)
    breaker.success()
    fail_sequentially(breaker, clock, 2)
    assert breaker.state is BreakerState.CLOSED


def test_calls_that_failed_together_count_once() -> None:
    """Many concurrent calls timing out in one stall are one incident, not N failures."""
    breaker, clock, _ = make()
    started = clock.now()
    for _ in range(10):
        assert breaker.allow()
    clock.t += 0.025
    for _ in range(10):
        breaker.failure(started, "timeout")
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 1


def test_half_open_lets_one_probe_through_after_cool_down() -> None:
    """After open_s one call (and only one) is let through to probe."""
    breaker, clock, changes = make()
    fail_sequentially(breaker, clock, 3)
    clock.t += 4.9
    assert not breaker.allow()
    clock.t += 0.2
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN]


def test_successful_probe_closes() -> None:
    """A probe that succeeds closes the breaker and every call goes through again."""
    breaker, clock, changes = make()
    fail_sequentially(breaker, clock, 3)
    clock.t += 5.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.allow()
    assert changes[-1] is BreakerState.CLOSED


def test_failed_probe_reopens_for_a_full_cool_down() -> None:
    """A probe that fails opens the breaker again for another open_s."""
    breaker, clock, _ = make()
    fail_sequentially(breaker, clock, 3)
    clock.t += 5.0
    assert breaker.allow()
    breaker.failure(clock.now(), "ConnectionError")
    assert breaker.state is BreakerState.OPEN
    clock.t += 4.0
    assert not breaker.allow()
    clock.t += 1.0
    assert breaker.allow()


def test_abandoned_probe_lets_another_probe_try() -> None:
    """A probe cancelled before its outcome does not leave the breaker stuck half-open."""
    breaker, clock, _ = make()
    fail_sequentially(breaker, clock, 3)
    clock.t += 5.0
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()
