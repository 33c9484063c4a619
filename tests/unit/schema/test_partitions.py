"""Partition planning for the postgres tier: alignment, gaps, names, bounds, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingestd.schema.partitions import (
    Partition,
    Range,
    ahead,
    expired,
    floor,
    gaps,
    parse_bound,
    partition_name,
    plan,
)

DAY, HOUR = timedelta(days=1), timedelta(hours=1)


def t(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


def test_floor_aligns_to_the_epoch_in_utc() -> None:
    """Buckets start at multiples of the width since 1970-01-01 UTC, like TimescaleDB chunks."""
    assert floor(t(5, 13, 7), DAY) == t(5)
    assert floor(t(5, 13, 7), 6 * HOUR) == t(5, 12)


def test_name_carries_the_lower_bound() -> None:
    """Partitions are named <table>_pYYYYMMDD_HHMM after their lower bound (UTC)."""
    assert partition_name("traces", t(5, 18)) == "traces_p20250305_1800"


def test_bound_text_parses_and_default_does_not() -> None:
    """pg_get_expr's FOR VALUES text gives a Range; DEFAULT gives None."""
    text = "FOR VALUES FROM ('2025-03-05 00:00:00+00') TO ('2025-03-06 00:00:00+00')"
    assert parse_bound(text) == Range(t(5), t(6))
    assert parse_bound("DEFAULT") is None
    assert parse_bound("FOR VALUES FROM (MINVALUE) TO ('2025-03-06 00:00:00+00')") is None


def test_gaps_are_what_existing_ranges_leave() -> None:
    """Only uncovered parts of the wanted range come back, in order."""
    existing = [Range(t(5, 6), t(5, 12)), Range(t(5, 18), t(6, 6))]
    assert gaps(existing, Range(t(5), t(6))) == [Range(t(5), t(5, 6)), Range(t(5, 12), t(5, 18))]
    assert gaps(existing, Range(t(5, 6), t(5, 12))) == []


def test_plan_covers_each_bucket_once() -> None:
    """Times in the same bucket give one partition; existing ones are not recreated."""
    existing = [Range(t(5), t(6))]
    wanted = [t(5, 3), t(6, 1), t(6, 23), t(8, 2)]
    assert plan(existing, wanted, DAY) == [Range(t(6), t(7)), Range(t(8), t(9))]


def test_plan_clips_around_partitions_of_another_width() -> None:
    """After a width change, new partitions fill only what old ones leave free."""
    existing = [Range(t(5), t(5, 6))]
    assert plan(existing, [t(5, 1), t(5, 7)], DAY) == [Range(t(5, 6), t(6))]


def test_ahead_reaches_the_bucket_holding_now_plus_distance() -> None:
    """Partitions ahead run from now's bucket through the one containing now + distance."""
    starts = ahead(t(5, 13), timedelta(hours=48), DAY)
    assert starts == [t(5), t(6), t(7)]
    assert max(starts) + DAY > t(5, 13) + timedelta(hours=48)


def test_expired_means_wholly_older_than_the_cutoff() -> None:
    """A partition goes only when its upper bound is at or before the cutoff."""
    parts = [Partition("a", Range(t(3), t(4))), Partition("b", Range(t(4), t(5)))]
    assert [p.name for p in expired(parts, t(4))] == ["a"]
    assert [p.name for p in expired(parts, t(4, 23))] == ["a"]
    assert [p.name for p in expired(parts, t(5))] == ["a", "b"]
