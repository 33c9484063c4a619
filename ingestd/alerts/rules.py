"""Pure rule arithmetic: Prometheus' extrapolated rate, histogram quantiles, comparison,
labels and fingerprints, message templates. No I/O; queries.py feeds these."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ingestd.alerts.config import Comparison, RuleConfig

# OTLP AggregationTemporality: 1 delta, 2 cumulative.
DELTA = 1
CUMULATIVE = 2


@dataclass(frozen=True)
class Sample:
    """One series' value at an evaluation: application (None: about no application),
    the series' identifying attributes, and the value (None: the series has data but no
    computable value, e.g. a rate from one point)."""

    application: str | None
    series: Mapping[str, Any]
    value: float | None


def extrapolated_rate(
    points: Sequence[tuple[float, float]], range_start: float, range_end: float, *, counter: bool
) -> float | None:
    """Prometheus' `rate()` of (time_s, value) points ordered by time, over [start, end].

    Counter resets (a value lower than the one before) add the value before the reset, the
    increase is extrapolated towards the range's ends (by at most half an average interval
    past the first/last sample, and for counters never below zero at the start), then divided
    by the range. Fewer than two points: None (Prometheus returns no sample).
    """
    if len(points) < 2:
        return None
    first_t, first_v = points[0]
    last_t, last_v = points[-1]
    increase = last_v - first_v
    if counter:
        previous = first_v
        for _, value in points[1:]:
            if value < previous:
                increase += previous
            previous = value
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    average_gap = sampled / (len(points) - 1)
    to_start = first_t - range_start
    to_end = range_end - last_t
    if counter and increase > 0 and first_v >= 0:
        # The counter cannot have been below zero: do not extrapolate past where it was 0.
        to_zero = sampled * (first_v / increase)
        to_start = min(to_start, to_zero)
    threshold = average_gap * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average_gap / 2
    interval += to_end if to_end < threshold else average_gap / 2
    return increase * (interval / sampled) / (range_end - range_start)


def delta_rate(values: Sequence[float], window_s: float) -> float | None:
    """Delta temporality: each point is already an increase; their sum over the window."""
    return sum(values) / window_s if values else None


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """Prometheus' histogram_quantile over explicit bounds (len(counts) = len(bounds) + 1).

    Linear interpolation inside the bucket holding the rank; the first bucket starts at 0
    when its bound is positive; a rank in the +Inf bucket answers the highest finite bound.
    No observations: None.
    """
    if len(counts) != len(bounds) + 1:
        return None
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if seen + count >= rank and count > 0:
            if i == len(bounds):
                return bounds[-1] if bounds else None
            upper = bounds[i]
            lower = bounds[i - 1] if i > 0 else (0.0 if upper > 0 else upper)
            return lower + (upper - lower) * ((rank - seen) / count)
        seen += count
    return bounds[-1] if bounds else None


def bucket_increase(first: Sequence[int], last: Sequence[int]) -> list[int]:
    """Cumulative histograms: last - first per bucket, or last alone after a reset."""
    if len(first) != len(last) or any(b < a for a, b in zip(first, last, strict=True)):
        return list(last)
    return [b - a for a, b in zip(first, last, strict=True)]


def holds(value: float, op: Comparison, threshold: float) -> bool:
    """The rule's comparison; NaN never holds (as Prometheus drops NaN comparisons)."""
    if math.isnan(value):
        return False
    match op:
        case ">":
            return value > threshold
        case ">=":
            return value >= threshold
        case "<":
            return value < threshold
        case "<=":
            return value <= threshold
        case "==":
            return value == threshold
        case "!=":
            return value != threshold


_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def alert_labels(rule: RuleConfig, sample: Sample) -> dict[str, str]:
    """The alert's identifying labels: alertname, the rule's labels, application, the series.

    Series attributes are sanitized into Alertmanager label names (`http.route` becomes
    `http_route`); a rule label wins over an attribute of the same name.
    """
    labels: dict[str, str] = {}
    for key, value in sorted(sample.series.items()):
        labels[_LABEL_UNSAFE.sub("_", key)] = value if isinstance(value, str) else _text(value)
    labels.update(rule.labels)
    if sample.application is not None:
        labels["application"] = sample.application
    labels["alertname"] = rule.name
    labels["severity"] = rule.severity
    return labels


def fingerprint(rule: str, application: str | None, series: Mapping[str, Any]) -> str:
    """Stable id of rule + application + series: 16 hex digits of SHA-256 over sorted JSON."""
    key = orjson.dumps([rule, application, series], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(key).hexdigest()[:16]


def render(template: str, rule: RuleConfig, sample: Sample) -> str:
    """The rule's message (or an annotation) for one sample; validated at config load."""
    condition = rule.condition
    series = ", ".join(f"{k}={_text(v)}" for k, v in sorted(sample.series.items()))
    value = sample.value if sample.value is not None else math.nan
    return template.format(
        rule=rule.name,
        severity=rule.severity,
        application=sample.application or "",
        series=series,
        value=value,
        threshold=condition.threshold,
        op=condition.op,
        window_s=condition.window_s,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
