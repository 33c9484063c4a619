"""Who a request is charged to, for rate limits: its tenant, or each application in it.

With authentication on, the bearer token names the tenant and the whole request is its.
Without it the tenant is the application, known only once the request is decoded: each
resource's `service.namespace`, `service.name` and `deployment.environment` name one
(`shop/checkout@prod`, or just `checkout`), and a request holding several applications charges
each its own items (and a proportional share of the bytes). Pure code on the decoded request:
one pass over resources and scopes, never over records.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ingestd.convert.identity import service_identity
from ingestd.model import Signal
from ingestd.signals import SIGNALS


class Charge(NamedTuple):
    tenant: str
    items: int
    nbytes: int


def charges(signal: Signal, request: Any, tenant: str, wire_bytes: int) -> list[Charge]:
    """What *request* costs whom; *tenant* is the authenticated one, or "" without auth."""
    counted = list(SIGNALS[signal].count_items(request))
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
    return service_identity(resource.attributes).readable
