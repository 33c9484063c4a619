"""Labelled metric children bound once, for the per-request path.

`metric.labels(...)` takes a lock, checks every value and hashes them on each call (1.3 us with
keyword arguments, against 0.14 us for a `Children` lookup; measured 2026-12-05 on the shared
2-vCPU EPYC); a request touches a dozen labelled metrics. `Children` keeps the child of each
label tuple it has seen in a plain dict, so a request pays one dict lookup per metric. Only for
labels drawn from small closed sets (signal, transport, outcome, op, error class): the dict
grows by one entry per distinct tuple and is never pruned.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """`Children(ACK_SECONDS)("traces", "grpc", "ok")` is `ACK_SECONDS.labels(...)`, cached.

    Values are given positionally, in the metric's label order.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child
