"""Pure rule arithmetic: Prometheus' extrapolated rate, histogram quantiles, comparisons."""

from __future__ import annotations

import math

import pytest

from ingestd.alerts.rules import (
    bucket_increase,
    delta_rate,
    extrapolated_rate,
    fingerprint,
    histogram_quantile,
    holds,
)


def test_rate_extrapolates_to_the_range_ends_but_not_below_zero() -> None:
    """Samples 5 s inside both ends of [0, 60]: the start stops where the counter was 0."""
    points = [(5.0 + 10 * i, 10.0 * i) for i in range(6)]  # 0..50 at 5..55 s
    # increase 50 over 50 s; to the start: 5 s, but the counter was 0 at 5 s already;
    # to the end: 5 s (< 1.1 average gaps): 50 * 55 / 50 = 55 over 60 s.
    assert extrapolated_rate(points, 0.0, 60.0, counter=True) == pytest.approx(55 / 60)


def test_rate_adds_the_value_before_a_counter_reset() -> None:
    """10, 20, reset to 5, 15: the increase is 25 (Prometheus' counter correction)."""
    points = [(0.0, 10.0), (10.0, 20.0), (20.0, 5.0), (30.0, 15.0)]
    assert extrapolated_rate(points, 0.0, 30.0, counter=True) == pytest.approx(25 / 30)


def test_rate_extrapolates_half_a_gap_when_samples_stop_far_from_the_ends() -> None:
    """Samples 20 s from both ends (gap 10 s): each side gets 5 s, 20 over 30 s of 60."""
    points = [(20.0, 100.0), (30.0, 110.0), (40.0, 120.0)]
    assert extrapolated_rate(points, 0.0, 60.0, counter=True) == pytest.approx(30 / 60)


def test_rate_of_a_non_monotonic_sum_has_no_reset_correction() -> None:
    """An up-down counter going down is a negative rate, not a reset."""
    assert extrapolated_rate([(0.0, 10.0), (10.0, 5.0)], 0.0, 10.0, counter=False) == -0.5


def test_rate_needs_two_samples_and_delta_points_are_summed() -> None:
    """One sample gives no rate; delta points are increases summed over the window."""
    assert extrapolated_rate([(1.0, 5.0)], 0.0, 60.0, counter=True) is None
    assert delta_rate([3.0, 4.0, 5.0], 60.0) == pytest.approx(0.2)
    assert delta_rate([], 60.0) is None


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    """Ranks fall in (1, 2] and (2, 4]; linear interpolation as histogram_quantile does."""
    bounds, counts = [1.0, 2.0, 4.0], [0, 10, 10, 0]
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(2.0)
    assert histogram_quantile(0.75, bounds, counts) == pytest.approx(3.0)
    assert histogram_quantile(0.25, bounds, counts) == pytest.approx(1.5)


def test_histogram_quantile_edges() -> None:
    """The first bucket starts at 0; +Inf answers the highest bound; empty is None."""
    assert histogram_quantile(0.5, [10.0], [4, 0]) == pytest.approx(5.0)
    assert histogram_quantile(0.99, [1.0, 2.0], [0, 0, 5]) == 2.0
    assert histogram_quantile(0.5, [1.0], [0, 0]) is None
    assert histogram_quantile(0.5, [1.0], [1, 2, 3]) is None  # counts do not fit the bounds


def test_cumulative_buckets_increase_or_restart() -> None:
    """last - first per bucket, or last alone when any bucket went down (a reset)."""
    assert bucket_increase([1, 2, 3], [2, 4, 6]) == [1, 2, 3]
    assert bucket_increase([5, 5, 5], [1, 1, 1]) == [1, 1, 1]


def test_comparisons_and_nan() -> None:
    """Each operator compares value with threshold; NaN never holds."""
    assert holds(2.0, ">", 1.0)
    assert not holds(1.0, ">", 1.0)
    assert holds(1.0, ">=", 1.0)
    assert holds(0.5, "<", 1.0)
    assert holds(1.0, "<=", 1.0)
    assert holds(1.0, "==", 1.0)
    assert holds(2.0, "!=", 1.0)
    assert not holds(math.nan, "!=", 1.0)


def test_fingerprint_is_stable_and_ignores_attribute_order() -> None:
    """The same rule, application and attributes give the same 16 hex digits."""
    one = fingerprint("r", "app", {"a": 1, "b": "x"})
    assert one == fingerprint("r", "app", {"b": "x", "a": 1})
    assert len(one) == 16
    assert one != fingerprint("r", None, {"a": 1, "b": "x"})
