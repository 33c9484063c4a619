"""The alert state machine of one series, pure and driven by the evaluation's clock.

Prometheus' semantics (rules/alerting.go):

    no state --true--> pending (activeSince = now)      for_s = 0: firing at once
    pending  --true, now - activeSince >= for_s--> firing          transition "firing"
    pending  --false or no data--> no state                         (no notification)
    firing   --true--> firing (lastTrueAt = now, keepFiringSince cleared)
    firing   --false or no data--> keepFiringSince = now if unset; then, once
             now - keepFiringSince >= keep_firing_for_s: no state   transition "resolved"
    no data with no_data: keep: whatever state there was stays.

"no data" is a series that had state but no sample in this evaluation. An evaluation whose
query failed never reaches this module (store.py changes nothing then).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

Phase = Literal["pending", "firing"]
Transition = Literal["firing", "resolved"]


@dataclass(frozen=True)
class SeriesState:
    phase: Phase
    active_since: datetime
    last_true_at: datetime
    firing_since: datetime | None = None
    value: float | None = None
    # The first evaluation since the condition stopped holding (Prometheus' KeepFiringSince).
    keep_firing_since: datetime | None = None


@dataclass(frozen=True)
class Timing:
    for_s: float
    keep_firing_for_s: float
    keep_on_no_data: bool


def step(
    prev: SeriesState | None,
    condition: bool | None,
    value: float | None,
    now: datetime,
    timing: Timing,
) -> tuple[SeriesState | None, Transition | None]:
    """The next state of a series given this evaluation's outcome.

    *condition* is True (holds), False (data, does not hold) or None (no data).
    Returns the new state (None: forget the series) and the transition to notify, if any.
    """
    if condition is None and timing.keep_on_no_data:
        return prev, None
    if condition:
        if prev is None:
            prev = SeriesState("pending", active_since=now, last_true_at=now, value=value)
        else:
            prev = replace(prev, last_true_at=now, value=value, keep_firing_since=None)
        if prev.phase == "pending" and now - prev.active_since >= timedelta(seconds=timing.for_s):
            return replace(prev, phase="firing", firing_since=now), "firing"
        return prev, None
    if prev is None or prev.phase == "pending":
        return None, None
    since = prev.keep_firing_since or now
    if now - since < timedelta(seconds=timing.keep_firing_for_s):
        return replace(
            prev, value=prev.value if value is None else value, keep_firing_since=since
        ), None
    return None, "resolved"
