"""Rollup refresh windows: first run, late window, catch-up, slices, due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingestd.schema.partitions import Range
from ingestd.schema.rollups import RollupState, due, slices, window

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
NOW = datetime(2025, 3, 5, 10, 20, tzinfo=UTC)


def state(watermark: datetime | None = None, last: datetime | None = None) -> RollupState:
    return RollupState("metrics_hourly", HOUR, 3 * HOUR, 30 * timedelta(minutes=1), watermark, last)


def test_first_refresh_starts_at_the_oldest_row() -> None:
    """Without a watermark, everything from the oldest raw row's bucket is aggregated."""
    assert window(state(), NOW, NOW - 50 * HOUR) == Range(
        datetime(2025, 3, 3, 8, tzinfo=UTC), datetime(2025, 3, 5, 10, tzinfo=UTC)
    )


def test_first_refresh_of_an_empty_table_is_empty() -> None:
    """No rows and no watermark: an empty window at the current bucket."""
    rng = window(state(), NOW, None)
    assert rng.lo == rng.hi == datetime(2025, 3, 5, 10, tzinfo=UTC)


def test_steady_refresh_covers_the_late_window() -> None:
    """With a recent watermark, the window starts at the bucket of now - late window."""
    rng = window(state(watermark=datetime(2025, 3, 5, 10, tzinfo=UTC)), NOW, None)
    assert rng == Range(datetime(2025, 3, 5, 7, tzinfo=UTC), datetime(2025, 3, 5, 10, tzinfo=UTC))


def test_refresh_after_downtime_catches_up_from_the_watermark() -> None:
    """A watermark older than the late window starts the window there."""
    old = datetime(2025, 3, 1, 4, tzinfo=UTC)
    assert window(state(watermark=old), NOW, None).lo == old


def test_only_complete_buckets_are_materialized() -> None:
    """The window ends at the start of the current bucket (the view aggregates it live)."""
    assert window(state(watermark=NOW), NOW, None).hi == datetime(2025, 3, 5, 10, tzinfo=UTC)


def test_slices_split_a_long_window() -> None:
    """A 2.5-day window in 1-day slices gives three slices that tile it."""
    rng = Range(NOW, NOW + 60 * HOUR)
    parts = slices(rng, DAY)
    assert [p.hi - p.lo for p in parts] == [DAY, DAY, 12 * HOUR]
    assert parts[0].lo == rng.lo
    assert parts[-1].hi == rng.hi


def test_due_after_the_refresh_interval() -> None:
    """A rollup is due when never refreshed or refreshed at least an interval ago."""
    assert due(state(), NOW)
    assert not due(state(last=NOW - 29 * timedelta(minutes=1)), NOW)
    assert due(state(last=NOW - 30 * timedelta(minutes=1)), NOW)
