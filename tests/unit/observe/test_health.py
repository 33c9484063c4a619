"""The health board: state changes are logged and exported once, repeats cost nothing."""

from __future__ import annotations

from prometheus_client import REGISTRY

from ingestd.observe.health import Health, State


def _up(name: str) -> float | None:
    return REGISTRY.get_sample_value("ingestd_component_up", {"component": name})


def _degraded(name: str) -> float | None:
    return REGISTRY.get_sample_value("ingestd_component_degraded", {"component": name})


def test_gauges_follow_every_change_and_repeats_keep_since() -> None:
    """A change moves the gauges and `since`; the same state and detail again changes nothing."""
    health = Health()
    health.register("unit-health-a")
    assert _up("unit-health-a") == 0
    health.set("unit-health-a", State.OK)
    assert _up("unit-health-a") == 1
    since = health.get("unit-health-a").since
    health.set("unit-health-a", State.OK)
    assert health.get("unit-health-a").since == since
    health.set("unit-health-a", State.DEGRADED, "breaker open")
    assert (_up("unit-health-a"), _degraded("unit-health-a")) == (1, 1)
    health.set("unit-health-a", State.UNAVAILABLE, "refused")
    assert (_up("unit-health-a"), _degraded("unit-health-a")) == (0, 0)
    assert health.get("unit-health-a").detail == "refused"


def test_registering_again_exports_the_current_state() -> None:
    """register() on a known component keeps its state and writes it to the gauges."""
    health = Health()
    health.register("unit-health-b")
    health.set("unit-health-b", State.OK)
    health.register("unit-health-b")
    assert health.get("unit-health-b").state is State.OK
    assert _up("unit-health-b") == 1


def test_a_component_set_without_registering_is_exported() -> None:
    """set() on an unknown name creates it and writes its gauges, even in its first state."""
    health = Health()
    health.set("unit-health-c", State.STARTING)
    assert _up("unit-health-c") == 0
    health.set("unit-health-c", State.OK)
    assert _up("unit-health-c") == 1
