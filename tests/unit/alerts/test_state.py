"""The pending / firing state machine of one series, on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingestd.alerts.state import SeriesState, Timing, step

T = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def run(timing: Timing, outcomes: list[tuple[float, bool | None]]) -> list[str | None]:
    """Feed (time, condition) pairs; return the phase after each (None: no state)."""
    state: SeriesState | None = None
    phases: list[str | None] = []
    for t, condition in outcomes:
        state, _ = step(state, condition, 1.0, at(t), timing)
        phases.append(state.phase if state else None)
    return phases


def test_fires_only_after_for_and_resolves_when_false() -> None:
    """for 60 s: pending at 0 and 30, firing at 60, resolved (no state) at 90."""
    timing = Timing(for_s=60, keep_firing_for_s=0, keep_on_no_data=False)
    state, transition = step(None, True, 2.0, at(0), timing)
    assert state is not None
    assert (state.phase, transition) == ("pending", None)
    state, transition = step(state, True, 2.0, at(30), timing)
    assert (state and state.phase, transition) == ("pending", None)
    state, transition = step(state, True, 2.0, at(60), timing)
    assert state is not None
    assert (state.phase, transition, state.firing_since) == ("firing", "firing", at(60))
    state, transition = step(state, False, 0.5, at(90), timing)
    assert (state, transition) == (None, "resolved")


def test_zero_for_fires_at_once_and_pending_drops_silently() -> None:
    """for 0 fires on the first true; a pending series that turns false leaves no trace."""
    assert step(None, True, 1.0, at(0), Timing(0, 0, False))[1] == "firing"
    assert run(Timing(60, 0, False), [(0, True), (30, False), (60, True)]) == [
        "pending",
        None,
        "pending",
    ]


def test_keep_firing_for_counts_from_the_first_evaluation_that_did_not_hold() -> None:
    """keep_firing_for 60 s (Prometheus' KeepFiringSince): false at 30 and 60 s keeps it
    firing, false at 90 s (60 s after the first false) resolves; a true in between resets."""
    timing = Timing(for_s=0, keep_firing_for_s=60, keep_on_no_data=False)
    state, _ = step(None, True, 1.0, at(0), timing)
    state, transition = step(state, False, 0.1, at(30), timing)
    assert state is not None
    assert (state.phase, state.keep_firing_since, transition) == ("firing", at(30), None)
    state, transition = step(state, False, 0.1, at(60), timing)
    assert (state and state.phase, transition) == ("firing", None)
    state, transition = step(state, False, 0.1, at(90), timing)
    assert (state, transition) == (None, "resolved")
    assert run(timing, [(0, True), (30, False), (60, True), (100, False), (150, False)]) == [
        "firing",
        "firing",
        "firing",
        "firing",
        "firing",
    ]


def test_no_data_resolves_after_keep_firing_for_unless_kept() -> None:
    """A series that stops reporting resolves like a false one; with no_data keep it stays."""
    resolve = Timing(for_s=0, keep_firing_for_s=30, keep_on_no_data=False)
    assert run(resolve, [(0, True), (20, None), (40, None), (50, None)]) == [
        "firing",
        "firing",
        "firing",
        None,
    ]
    keep = Timing(for_s=0, keep_firing_for_s=0, keep_on_no_data=True)
    assert run(keep, [(0, True), (20, None), (400, None), (500, False)]) == [
        "firing",
        "firing",
        "firing",
        None,
    ]


def test_pending_keeps_its_start_across_evaluations() -> None:
    """activeSince is the first true evaluation, so a restart does not restart `for`."""
    timing = Timing(for_s=100, keep_firing_for_s=0, keep_on_no_data=False)
    state, _ = step(None, True, 1.0, at(0), timing)
    state, _ = step(state, True, 1.0, at(50), timing)
    assert state is not None
    assert state.active_since == at(0)
    assert state.last_true_at == at(50)
