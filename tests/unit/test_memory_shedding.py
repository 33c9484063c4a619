"""Memory admission: readiness after long shedding, and the declared body reserved up front."""

from __future__ import annotations

from ingestd.config import MemoryConfig
from ingestd.errors import MemoryPressure
from ingestd.memory import COMPONENT, MemoryGuard
from ingestd.observe.health import Health, State
from tests.fakes import FakeClock, FakeRss

MiB = 1024 * 1024


def test_readiness_fails_after_continuous_shedding_and_returns_after() -> None:
    """Shedding for unready_after_shedding_s makes `memory` unavailable; its end, ok again."""
    rss, clock, health = FakeRss(100 * MiB), FakeClock(), Health()
    guard = MemoryGuard(
        MemoryConfig(max_rss_mib=200, unready_after_shedding_s=5),
        read_rss=rss,
        clock=clock,
        health=health,
    )
    health.started = True
    health.set(COMPONENT, State.OK)
    rss.value = 300 * MiB
    guard.sample()
    assert isinstance(guard.refusal(), MemoryPressure)
    clock.t += 4.9
    guard.sample()
    assert health.ready, "shedding for a while is load shedding, not a failure"
    clock.t += 0.2
    guard.sample()
    assert not health.ready
    assert health.get(COMPONENT).state is State.UNAVAILABLE
    assert "rss" in health.get(COMPONENT).detail
    rss.value = 100 * MiB
    clock.t += 1.5  # a quiet second ends the episode
    guard.sample()
    clock.t += 0.1
    guard.sample()
    assert health.ready


def test_zero_keeps_readiness_out_of_shedding() -> None:
    """unready_after_shedding_s: 0 never turns readiness off."""
    clock, health = FakeClock(), Health()
    guard = MemoryGuard(
        MemoryConfig(max_rss_mib=200, unready_after_shedding_s=0),
        read_rss=FakeRss(300 * MiB),
        clock=clock,
        health=health,
    )
    health.started = True
    health.set(COMPONENT, State.OK)
    for _ in range(100):
        clock.t += 1
        guard.sample()
    assert health.ready


def test_a_declared_body_is_reserved_at_admission() -> None:
    """A declared Content-Length counts against held bytes before the body arrives."""
    guard = MemoryGuard(
        MemoryConfig(max_buffered_bytes=30 * MiB, max_rss_mib=0), read_rss=FakeRss(MiB)
    )
    assert guard.refusal(20 * MiB) is None, "nothing held: one large body passes"
    with guard.budget.decoding_body(20 * MiB):
        assert isinstance(guard.refusal(20 * MiB), MemoryPressure)
        assert guard.refusal(5 * MiB) is None


def test_declared_bodies_count_toward_the_rss_estimate() -> None:
    """Between samples, admitted declared bodies (not a typical one) grow the RSS estimate."""
    clock = FakeClock()
    guard = MemoryGuard(MemoryConfig(max_rss_mib=200), read_rss=FakeRss(100 * MiB), clock=clock)
    guard.sample()
    assert guard.refusal(10 * MiB) is None
    assert guard.refusal(10 * MiB) is None
    assert isinstance(guard.refusal(10 * MiB), MemoryPressure), "100 MiB + 6 x 20 MiB > 200"
