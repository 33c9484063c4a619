"""Who a request is charged to: the authenticated tenant, or each application in it."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ingestd.model import Signal
from ingestd.tenants import Charge, application_name, charges


def resource(**attrs: str) -> Resource:
    res = Resource()
    for key, value in attrs.items():
        kv = res.attributes.add()
        kv.key, kv.value.string_value = key.replace("_", "."), value
    return res


def test_application_name_has_namespace_and_environment_when_set() -> None:
    """namespace/name@environment, parts left out when unset, SDK default name."""
    assert application_name(resource(service_name="checkout")) == "checkout"
    full = resource(service_namespace="shop", service_name="checkout")
    full.attributes.add(key="deployment.environment.name").value.string_value = "prod"
    assert application_name(full) == "shop/checkout@prod"
    assert application_name(Resource()) == "unknown_service"


def test_authenticated_tenant_pays_for_the_whole_request() -> None:
    """With a tenant, one charge with every item and the wire bytes."""
    request = ExportLogsServiceRequest()
    for name in ("a", "b"):
        rl = request.resource_logs.add()
        rl.resource.CopyFrom(resource(service_name=name))
        rl.scope_logs.add().log_records.add()
    assert charges(Signal.LOGS, request, "acme", 500) == [Charge("acme", 2, 500)]


def test_without_tenant_each_application_pays_its_items_and_share_of_bytes() -> None:
    """Metrics count data points; bytes are split in proportion to items."""
    request = ExportMetricsServiceRequest()
    for name, points in (("a", 3), ("b", 1)):
        rm = request.resource_metrics.add()
        rm.resource.CopyFrom(resource(service_name=name))
        metric = rm.scope_metrics.add().metrics.add(name="m")
        for _ in range(points):
            metric.gauge.data_points.add(as_double=1.0)
    assert charges(Signal.METRICS, request, "", 400) == [Charge("a", 3, 300), Charge("b", 1, 100)]


def test_empty_request_costs_nothing() -> None:
    """A request without records charges no bucket."""
    assert charges(Signal.LOGS, ExportLogsServiceRequest(), "", 10) == []
