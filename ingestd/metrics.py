"""Every self-metric ingestd exports, in one place, so the README's list can be checked against it.

Names follow `ingestd_<stage>_<thing>_<unit>`. Labels stay low-cardinality: signal, transport,
sink, reason, outcome; never a tenant or an application id.
"""

from __future__ import annotations

from prometheus_client import Gauge

# -- lifecycle and health -------------------------------------------------------------------
COMPONENT_UP = Gauge(
    "ingestd_component_up",
    "1 when a component (sink, Redis, receiver) is ok or degraded, 0 otherwise",
    ["component"],
)
BUILD_INFO = Gauge("ingestd_build_info", "Always 1; the version is a label", ["version"])
