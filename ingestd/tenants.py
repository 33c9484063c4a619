"""Who a request is charged to, for rate limits: its tenant, or each application in it.

With authentication on, the bearer token names the tenant and the whole request is its.
Without it the tenant is the application, known only once the request is decoded: each
resource's `service.namespace`, `service.name` and `deployment.environment` name one
(`shop/checkout@prod`, or just `checkout`), and a request holding several applications charges
each its own items (and a proportional share of the bytes). Empty structure is charged too: a
resource costs at least one item, and at least one per scope it holds. Pure code on the decoded
request:
one pass over resources and scopes, never over records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import xxhash


class Charge(NamedTuple):
    tenant: str
    items: int
    nbytes: int


def charges(signal: str, request: Any, tenant: str, wire_bytes: int) -> list[Charge]:
    """What *request* costs whom; *tenant* is the authenticated one, or "" without auth."""
    counted = list(_COUNTERS[signal](request))
    total = sum(items for _, items in counted)
    if not total:
        return []
    if tenant:
        return [Charge(tenant, total, wire_bytes)]
    per_app: dict[str, int] = {}
    for resource, items in counted:
        if items:
            name = application_name(resource)
            per_app[name] = per_app.get(name, 0) + items
    return [Charge(name, items, -(-wire_bytes * items // total)) for name, items in per_app.items()]


def application_name(resource: Any) -> str:
    """`namespace/name@environment`, parts left out when unset; the SDKs' default name."""
    name, namespace, environment, environment_new = "unknown_service", "", "", ""
    for kv in resource.attributes:
        key = kv.key
        if key == "service.name":
            name = kv.value.string_value or name
        elif key == "service.namespace":
            namespace = kv.value.string_value
        elif key == "deployment.environment":
            environment = kv.value.string_value
        elif key == "deployment.environment.name":
            environment_new = kv.value.string_value
    environment = environment or environment_new
    qualified = f"{namespace}/{name}" if namespace else name
    return bounded(f"{qualified}@{environment}" if environment else qualified)


# Names come from clients: one longer than this becomes its head plus a hash of the whole, so
# that the rate limiter's state and its Redis keys stay small (a name of 1 MB would otherwise
# be a Redis key of 1 MB).
MAX_NAME_CHARS = 128


def bounded(name: str) -> str:
    """*name* itself when short, else its first 100 characters, `#` and an xxh3_64 of it all."""
    if len(name) <= MAX_NAME_CHARS:
        return name
    return f"{name[:100]}#{xxhash.xxh3_64_hexdigest(name.encode(errors='surrogatepass'))}"


def _cost(records: int, scopes: int) -> int:
    """What one resource costs: its records, but at least one per scope and one for itself,
    so that a request of empty resources or scopes (cheap to send, dear to parse and walk) is
    charged too."""
    return max(records, scopes, 1)


def _traces(request: Any) -> Iterable[tuple[Any, int]]:
    for rs in request.resource_spans:
        scopes = rs.scope_spans
        yield rs.resource, _cost(sum(len(ss.spans) for ss in scopes), len(scopes))


def _metrics(request: Any) -> Iterable[tuple[Any, int]]:
    # Items are data points (one row each), as the batcher and the limits count them.
    for rm in request.resource_metrics:
        points = 0
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    points += len(getattr(metric, kind).data_points)
        yield rm.resource, _cost(points, len(rm.scope_metrics))


def _logs(request: Any) -> Iterable[tuple[Any, int]]:
    for rl in request.resource_logs:
        scopes = rl.scope_logs
        yield rl.resource, _cost(sum(len(sl.log_records) for sl in scopes), len(scopes))


# Keyed by the signal's value ("traces", ...): ingest.Signal is a StrEnum, so it looks up here.
_COUNTERS: dict[str, Callable[[Any], Iterable[tuple[Any, int]]]] = {
    "traces": _traces,
    "metrics": _metrics,
    "logs": _logs,
}
