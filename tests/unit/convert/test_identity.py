"""The service identity: one applicationId for every signal, one readable name for limits."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import xxhash
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2

from ingestd.convert import copy_binary, metrics, traces
from ingestd.convert.identity import application_id, application_id_of, service_identity
from ingestd.convert.logs import LogsConverter
from ingestd.convert.metrics import MetricConverter
from ingestd.convert.traces import TraceConverter
from ingestd.tenants import application_name
from tests.samples import set_attributes


def attrs(**values: object) -> list[common_pb2.KeyValue]:
    out = []
    for key, value in values.items():
        kv = common_pb2.KeyValue(key=key.replace("_", "."))
        if isinstance(value, str):
            kv.value.string_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        out.append(kv)
    return out


def test_matches_the_documented_formula() -> None:
    """xxh3_64 hex of namespace, name and environment joined by \\x1f."""
    expected = xxhash.xxh3_64_hexdigest(b"shop\x1fcheckout\x1fprod")
    got = application_id(
        attrs(service_namespace="shop", service_name="checkout", deployment_environment="prod")
    )
    assert got == expected
    assert len(got) == 16


def test_missing_name_is_unknown_service_and_missing_parts_are_empty() -> None:
    """No service.name counts as unknown_service; absent namespace/environment are empty."""
    assert application_id([]) == application_id_of("", "unknown_service", "")


def test_newer_environment_key_is_used_when_the_old_one_is_absent() -> None:
    """deployment.environment.name stands in for deployment.environment, which wins if both."""
    newer = attrs(service_name="a")
    kv = common_pb2.KeyValue(key="deployment.environment.name")
    kv.value.string_value = "staging"
    newer.append(kv)
    assert application_id(newer) == application_id_of("", "a", "staging")
    both = [*newer, *attrs(deployment_environment="prod")]
    assert application_id(both) == application_id_of("", "a", "prod")


def test_other_attributes_do_not_change_the_id() -> None:
    """Only the three identity attributes count (host, version... do not split an app)."""
    base = attrs(service_name="a")
    assert application_id([*base, *attrs(host_name="h1")]) == application_id(base)


# -- one identity for every signal -------------------------------------------------------------

_NOW = 1_700_000_000_000_000_000
_RESOURCES: dict[str, dict[str, Any]] = {
    "missing": {"service.namespace": "shop"},
    "empty": {"service.name": "", "deployment.environment": "prod"},
    "int": {"service.name": 42},
    "bool": {"service.name": True, "service.namespace": "ns"},
    "double": {"service.name": 1.5},
    "array": {"service.name": ["a", 1]},
    "bytes": {"service.name": b"\x00\xff"},
    "unicode": {"service.name": "kassé-服务", "deployment.environment.name": "préprod"},
    "empty_old_environment": {
        "service.name": "a",
        "deployment.environment": "",
        "deployment.environment.name": "staging",
    },
}


def _signal_ids(resource: dict[str, Any]) -> tuple[str, str, str]:
    """The applicationId each converter stores for one resource: traces, metrics, logs."""
    spans = ExportTraceServiceRequest()
    rs = spans.resource_spans.add()
    set_attributes(rs.resource.attributes, resource)
    rs.scope_spans.add().spans.add(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name="s",
        start_time_unix_nano=_NOW,
        end_time_unix_nano=_NOW + 1,
    )
    points = ExportMetricsServiceRequest()
    rm = points.resource_metrics.add()
    set_attributes(rm.resource.attributes, resource)
    gauge = rm.scope_metrics.add().metrics.add(name="g")
    gauge.gauge.data_points.add(time_unix_nano=_NOW, as_int=1)
    records = ExportLogsServiceRequest()
    rl = records.resource_logs.add()
    set_attributes(rl.resource.attributes, resource)
    rl.scope_logs.add().log_records.add(time_unix_nano=_NOW)

    trace_rows = copy_binary.decode(
        TraceConverter(max_future_skew_s=60)(spans).payload, traces.TYPES
    )
    metric_rows = copy_binary.decode(
        MetricConverter(max_future_skew_s=60)(points).payload, metrics.TYPES
    )
    log_items = LogsConverter(now_ns=lambda: _NOW)(records).payload
    trace_id = trace_rows[0][_column(traces.COLUMNS)]
    metric_id = metric_rows[0][_column(metrics.COLUMNS)]
    log_id = orjson.loads(log_items[0].split(b"\n")[1])["application_id"]
    return trace_id, metric_id, log_id


def _column(columns: Any) -> int:
    return [name for name, _ in columns].index("applicationid")


@pytest.mark.parametrize("resource", _RESOURCES.values(), ids=list(_RESOURCES))
def test_traces_metrics_and_logs_of_one_resource_join_on_one_id(resource: dict[str, Any]) -> None:
    """Every signal stores the same applicationId for a resource, whatever its service.name."""
    request = ExportTraceServiceRequest()
    set_attributes(request.resource_spans.add().resource.attributes, resource)
    identity = service_identity(request.resource_spans[0].resource.attributes)
    assert _signal_ids(resource) == (identity.application_id,) * 3


def test_string_names_keep_their_stored_ids() -> None:
    """The common case (string attributes) hashes exactly as before this module was shared."""
    ids = _signal_ids(
        {"service.name": "checkout", "service.namespace": "shop", "deployment.environment": "prod"}
    )
    assert ids == (xxhash.xxh3_64_hexdigest(b"shop\x1fcheckout\x1fprod"),) * 3


@pytest.mark.parametrize(
    ("resource", "readable"),
    [
        ({}, "unknown_service"),
        ({"service.name": ""}, "unknown_service"),
        ({"service.name": 42, "service.namespace": "shop"}, "shop/42"),
        ({"service.name": "kassé", "deployment.environment.name": "prod"}, "kassé@prod"),
    ],
)
def test_rate_limit_tenant_is_the_readable_form_of_the_same_identity(
    resource: dict[str, Any], readable: str
) -> None:
    """The rate limiter keys an application by `namespace/name@environment` of that identity."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    set_attributes(rs.resource.attributes, resource)
    assert application_name(rs.resource) == readable
    assert service_identity(rs.resource.attributes).readable == readable
