"""State built from client strings is bounded by bytes: application names (rate-limit keys),
local rate-limit buckets, and the metric description cache."""

from __future__ import annotations

import sys

from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ingestd.config import LimitsConfig, TenantLimitConfig
from ingestd.convert.common import Rows
from ingestd.sinks import timescale
from ingestd.state import ratelimit
from ingestd.state.ratelimit import RateLimiter
from ingestd.tenants import application_name, bounded
from tests.fakes import FakeClock


def test_a_megabyte_service_name_becomes_a_short_distinct_name() -> None:
    """A 1 MB service.name is charged under its head plus a hash: short, and still distinct."""
    resource = Resource()
    resource.attributes.add(key="service.name").value.string_value = "s" * 1_000_000
    name = application_name(resource)
    assert len(name) == 100 + 1 + 16
    assert name.startswith("s" * 100 + "#")
    assert bounded("s" * 1_000_000 + "x") != name
    assert bounded("checkout") == "checkout"


async def test_local_buckets_are_bounded_in_number() -> None:
    """Thousands of distinct applications keep at most _MAX_TENANTS local buckets and rates."""
    limits = LimitsConfig(default=TenantLimitConfig(items_per_s=100))
    limiter = RateLimiter(limits, None, clock=FakeClock())
    for i in range(ratelimit._MAX_TENANTS + 500):
        buckets = limiter._buckets([ratelimit.Charge(f"app{i}", 1, 10)])
        limiter._take_local(buckets)
    assert len(limiter._local) <= ratelimit._MAX_TENANTS
    assert len(limiter._rates) <= ratelimit._MAX_TENANTS


def test_description_cache_holds_digests_not_client_strings() -> None:
    """A 1 MB metric name and description cost the dimension cache a few dozen bytes."""
    dims = timescale.Dimensions()
    big = "d" * 1_000_000
    rows = Rows(descriptions={("app", big): ("gauge", "1", big)})
    pending = dims.pending([rows], now=1.0)
    dims.remember(pending, now=1.0)
    assert not dims.pending([rows], now=2.0).descriptions
    held = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in dims._descriptions.items())
    assert held < 200


def test_empty_structure_is_charged_to_the_rate_limit() -> None:
    """Resources and scopes without records still cost items: one each, at least."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from ingestd.tenants import Charge, charges

    request = ExportTraceServiceRequest()
    for _ in range(1001):
        request.resource_spans.add()
    with_scopes = request.resource_spans.add()
    for _ in range(5):
        with_scopes.scope_spans.add()
    assert charges("traces", request, "acme", 100) == [Charge("acme", 1000 + 1 + 5, 100)]
