"""Who a request is charged to, for rate limits: its tenant, or each application in it.

With authentication on, the bearer token names the tenant and the whole request is its.
Without it the tenant is the application, known only once the request is decoded: each
resource's `service.namespace`, `service.name` and `deployment.environment` name one
(`shop/checkout@prod`, or just `checkout`), and a request holding several applications charges
each its own items (and a proportional share of the bytes). Empty structure is charged too: a
resource costs at least one item, and at least one per scope it holds. Pure code on the decoded
request: one pass over resources and scopes, never over records.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import xxhash

from ingestd.convert.identity import service_identity
from ingestd.model import Signal
from ingestd.signals import SIGNALS


class Charge(NamedTuple):
    tenant: str
    items: int
    nbytes: int


def charges(signal: Signal, request: Any, tenant: str, wire_bytes: int) -> list[Charge]:
    """What *request* costs whom; *tenant* is the authenticated one, or "" without auth."""
    counted = [
        (resource, _cost(items, _scopes(signal, resource_message)))
        for (resource, items), resource_message in zip(
            SIGNALS[signal].count_items(request), _resources(signal, request), strict=True
        )
    ]
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
    """`namespace/name@environment` of *resource* (`ingestd.convert.identity`), parts left out
    when unset; the SDKs' default name when it has none."""
    return bounded(service_identity(resource.attributes).readable)


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


_RESOURCE_LISTS = {
    Signal.TRACES: ("resource_spans", "scope_spans"),
    Signal.METRICS: ("resource_metrics", "scope_metrics"),
    Signal.LOGS: ("resource_logs", "scope_logs"),
}


def _resources(signal: Signal, request: Any) -> Any:
    return getattr(request, _RESOURCE_LISTS[Signal(signal)][0])


def _scopes(signal: Signal, resource_message: Any) -> int:
    return len(getattr(resource_message, _RESOURCE_LISTS[Signal(signal)][1]))
