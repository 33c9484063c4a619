"""OTLP logs -> bulk items: document shape (Collector otel mode), routing, ids, rejects."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from ingestd.convert.identity import application_id_of
from ingestd.convert.logs import (
    LogsConverter,
    application_namespace,
    iso_nanos,
    sanitize_dataset,
)
from tests.samples import set_value

NOW = 1_700_000_000_000_000_000
T = 1_544_712_660_300_000_123


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    out = common_pb2.KeyValue(key=key)
    set_value(out.value, value)
    return out


def request(
    *records: logs_pb2.LogRecord,
    resource: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
    scope_name: str = "my.lib",
) -> logs_service_pb2.ExportLogsServiceRequest:
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(
        kv(k, v) for k, v in (resource or {"service.name": "svc"}).items()
    )
    sl = rl.scope_logs.add()
    sl.scope.name = scope_name
    sl.scope.attributes.extend(kv(k, v) for k, v in (scope or {}).items())
    sl.log_records.extend(records)
    return req


def record(body: Any = "hello", **fields: Any) -> logs_pb2.LogRecord:
    attributes = fields.pop("attributes", {})
    rec = logs_pb2.LogRecord(time_unix_nano=fields.pop("time_unix_nano", T), **fields)
    if body is not None:
        set_value(rec.body, body)
    rec.attributes.extend(kv(k, v) for k, v in attributes.items())
    return rec


def convert(req: Any, **options: Any) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], Any]:
    out = LogsConverter(now_ns=lambda: NOW, **options)(req)
    pairs = []
    for item in out.payload:
        action, doc, rest = item.split(b"\n")
        assert rest == b""
        pairs.append((orjson.loads(action), orjson.loads(doc)))
    assert out.items == len(pairs)
    assert out.nbytes == sum(len(i) for i in out.payload)
    return pairs, out


def only_doc(req: Any, **options: Any) -> dict[str, Any]:
    pairs, _ = convert(req, **options)
    assert len(pairs) == 1
    return pairs[0][1]


def test_full_document_shape() -> None:
    """Every otel-mode field is written under the Collector's name, ids in hex."""
    rec = record(
        "GET /orders took 12 ms",
        observed_time_unix_nano=T + 5,
        severity_number=9,
        severity_text="INFO",
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        flags=1,
        dropped_attributes_count=2,
        event_name="http.request",
        attributes={"http.method": "GET", "n": 3},
    )
    req = request(
        rec,
        resource={"service.name": "checkout", "service.namespace": "shop", "host.name": "h"},
        scope={"lib.attr": True},
    )
    req.resource_logs[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    req.resource_logs[0].scope_logs[0].scope.version = "1.2.3"
    req.resource_logs[0].scope_logs[0].schema_url = "https://scope/schema"
    doc = only_doc(req)
    assert doc == {
        "@timestamp": "2018-12-13T14:51:00.300000123Z",
        "observed_timestamp": "2018-12-13T14:51:00.300000128Z",
        "severity_text": "INFO",
        "severity_number": 9,
        "trace_id": "000102030405060708090a0b0c0d0e0f",
        "span_id": "0001020304050607",
        "flags": 1,
        "attributes": {"http.method": "GET", "n": 3},
        "event_name": "http.request",
        "dropped_attributes_count": 2,
        "body": {"text": "GET /orders took 12 ms"},
        "data_stream": {"type": "logs", "dataset": "generic.otel", "namespace": "default"},
        "application_id": application_id_of("shop", "checkout", ""),
        "resource": {
            "attributes": {
                "service.name": "checkout",
                "service.namespace": "shop",
                "host.name": "h",
            },
            "schema_url": "https://opentelemetry.io/schemas/1.26.0",
        },
        "scope": {
            "name": "my.lib",
            "version": "1.2.3",
            "attributes": {"lib.attr": True},
            "schema_url": "https://scope/schema",
        },
    }


def test_empty_fields_are_omitted() -> None:
    """Zero severity, empty ids, no attributes and no body leave no field behind."""
    doc = only_doc(request(record(None)))
    assert set(doc) == {"@timestamp", "data_stream", "application_id", "resource", "scope"}


def test_timestamp_falls_back_to_observed_then_to_receive_time() -> None:
    """@timestamp is the record time, else the observed time, else when ingestd received it."""
    observed_only = only_doc(request(record(time_unix_nano=0, observed_time_unix_nano=T)))
    assert observed_only["@timestamp"] == iso_nanos(T) == observed_only["observed_timestamp"]
    neither = only_doc(request(record(time_unix_nano=0)))
    assert neither["@timestamp"] == iso_nanos(NOW)


def test_nanoseconds_survive_the_encoding() -> None:
    """The ISO string keeps all nine fraction digits (date_nanos stores them)."""
    assert iso_nanos(1) == "1970-01-01T00:00:00.000000001Z"
    assert iso_nanos(T) == "2018-12-13T14:51:00.300000123Z"


def test_body_kinds() -> None:
    """Strings and scalars go to body.text; maps and arrays to body.structured, as the Collector."""

    def body(value: Any) -> Any:
        return only_doc(request(record(value)))["body"]

    assert body({"a": {"b": 1}}) == {"structured": {"a": {"b": 1}}}
    assert body([{"a": 1}, {"b": 2}]) == {"structured": [{"a": 1}, {"b": 2}]}
    assert body([1, "x"]) == {"structured": {"value": [1, "x"]}}
    assert body(42) == {"text": "42"}
    assert body(True) == {"text": "true"}
    assert body(b"\x00\xff") == {"text": "AP8="}


def test_attribute_values_survive_json() -> None:
    """Big ints stay exact, bytes become base64, NaN/Infinity become their names, maps nest."""
    attributes = only_doc(
        request(
            record(
                attributes={
                    "big": 2**63 - 1,
                    "raw": b"\x01\x02",
                    "nan": math.nan,
                    "inf": -math.inf,
                    "map": {"k": {"deep": 1.5}},
                    "empty_array": [],
                }
            )
        )
    )["attributes"]
    assert attributes == {
        "big": 9223372036854775807,
        "raw": "AQI=",
        "nan": "NaN",
        "inf": "-Infinity",
        "map": {"k": {"deep": 1.5}},
        "empty_array": [],
    }


def test_mixed_type_arrays_are_made_uniform() -> None:
    """A mixed array would fail a new field's dynamic mapping: numbers widen, others stringify."""
    attributes = only_doc(
        request(record(attributes={"nums": [1, 2.5], "mixed": [1, "a", True], "same": [1, 2]}))
    )["attributes"]
    assert attributes == {"nums": [1.0, 2.5], "mixed": ["1", "a", "true"], "same": [1, 2]}
    assert isinstance(attributes["nums"][0], float)


def test_blank_attribute_keys_are_dropped_and_counted() -> None:
    """Elasticsearch refuses a document with an empty field name: the attribute goes, counted."""
    doc = only_doc(
        request(record(attributes={"": "x", "  ": "y", "ok": 1}, dropped_attributes_count=1))
    )
    assert doc["attributes"] == {"ok": 1}
    assert doc["dropped_attributes_count"] == 3


def test_duplicate_keys_keep_one_value() -> None:
    """A document may not repeat a key (reference E7): the last value wins."""
    rec = record()
    rec.attributes.extend([kv("k", "first"), kv("k", "second")])
    assert only_doc(request(rec))["attributes"] == {"k": "second"}


def test_event_name_falls_back_to_the_attribute() -> None:
    """Older SDKs send the event name as the `event.name` attribute."""
    doc = only_doc(request(record(attributes={"event.name": "browser.click"})))
    assert doc["event_name"] == "browser.click"


def test_routing_precedence_record_scope_resource_config() -> None:
    """data_stream.* attributes route: record over scope over resource over config."""
    req = request(
        record(attributes={"data_stream.dataset": "Rec Set"}),
        record(attributes={"data_stream.namespace": "recns"}),
        record(),
        resource={
            "service.name": "s",
            "data_stream.dataset": "resset",
            "data_stream.namespace": "resns",
        },
        scope={"data_stream.namespace": "scopens"},
    )
    pairs, _ = convert(req, dataset="cfgset", namespace="cfgns")
    indices = [action["create"]["_index"] for action, _ in pairs]
    assert indices == [
        "logs-rec_set.otel-scopens",
        "logs-resset.otel-recns",
        "logs-resset.otel-scopens",
    ]
    for _, doc in pairs:
        assert not any(k.startswith("data_stream.") for k in doc.get("attributes", {}))
        assert not any(k.startswith("data_stream.") for k in doc["resource"]["attributes"])
        assert f"logs-{doc['data_stream']['dataset']}-{doc['data_stream']['namespace']}" in indices


def test_config_route_and_default() -> None:
    """Without attributes, config decides; by default the Collector's logs-generic.otel-default."""
    pairs, _ = convert(request(record()))
    assert pairs[0][0]["create"]["_index"] == "logs-generic.otel-default"
    pairs, _ = convert(request(record()), dataset="app", namespace="prod")
    assert pairs[0][0]["create"]["_index"] == "logs-app.otel-prod"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("My-App", "my_app.otel"),
        ("a/b*c?d", "a_b_c_d.otel"),
        ("x.otel", "x.otel"),
        ("_hidden", "hidden.otel"),
        ("---", ""),
        ("é", ""),
        ("a" * 150, "a" * 100 + ".otel"),
    ],
)
def test_dataset_names_are_sanitized(raw: str, clean: str) -> None:
    """Data stream parts follow Elasticsearch's naming rules (lower case, no '-', <= 100)."""
    assert sanitize_dataset(raw) == clean


def test_unusable_routing_value_keeps_the_inherited_route() -> None:
    """A dataset that sanitizes to nothing does not route anywhere odd."""
    pairs, _ = convert(request(record(attributes={"data_stream.dataset": "---"})))
    assert pairs[0][0]["create"]["_index"] == "logs-generic.otel-default"


def test_ids_are_deterministic_and_identical_records_are_both_kept() -> None:
    """Same request -> same ids (a retry is a 409); two identical records -> two ids."""
    req = request(record("same"), record("same"), record("other"))
    first, _ = convert(req)
    again, _ = convert(req)
    ids = [a["create"]["_id"] for a, _ in first]
    assert ids == [a["create"]["_id"] for a, _ in again]
    assert len(set(ids)) == 3
    assert all(a["create"].keys() == {"_index", "_id"} for a, _ in first)


def test_ids_depend_on_resource_and_scope() -> None:
    """The same record from another service is another document."""
    a, _ = convert(request(record("x"), resource={"service.name": "a"}))
    b, _ = convert(request(record("x"), resource={"service.name": "b"}))
    c, _ = convert(request(record("x"), scope_name="other"))
    assert len({p[0][0]["create"]["_id"] for p in (a, b, c)}) == 3


def test_future_records_are_rejected_alone() -> None:
    """A record beyond the allowed clock skew is refused, counted, and the rest kept."""
    late = record("future", time_unix_nano=NOW + 2 * 86400 * 10**9)
    pairs, out = convert(request(record("ok"), late), max_future_skew_s=86400)
    assert [doc["body"]["text"] for _, doc in pairs] == ["ok"]
    assert out.rejected == 1
    assert out.reject_reasons == {"future_timestamp": 1}
    assert "future" in out.reject_example


def test_resource_and_scope_are_shared_by_their_records() -> None:
    """Records of one scope carry byte-identical resource and scope parts."""
    pairs, _ = convert(request(record("a"), record("b"), resource={"service.name": "s", "k": 1}))
    assert (
        pairs[0][1]["resource"]
        == pairs[1][1]["resource"]
        == {"attributes": {"service.name": "s", "k": 1}}
    )
    assert pairs[0][1]["application_id"] == pairs[1][1]["application_id"]


def test_empty_request_converts_to_nothing() -> None:
    """No records: no items, nothing rejected."""
    _, out = convert(logs_service_pb2.ExportLogsServiceRequest())
    assert (out.items, out.rejected, list(out.payload)) == (0, 0, [])


def test_registered_application_keeps_its_documents_in_its_namespace() -> None:
    """With an application id (ingest key), documents carry it and stay in its namespace:
    data_stream.namespace at any level is ignored; the dataset may still be chosen."""
    req = request(
        record(attributes={"data_stream.namespace": "victim", "data_stream.dataset": "audit"}),
        record(),
        resource={"service.name": "victim-svc", "data_stream.namespace": "victim"},
        scope={"data_stream.namespace": "victim"},
    )
    out = LogsConverter(now_ns=lambda: NOW)(req, "app-7")
    indices, docs = [], []
    for item in out.payload:
        action, doc, _ = item.split(b"\n")
        indices.append(orjson.loads(action)["create"]["_index"])
        docs.append(orjson.loads(doc))
    namespace = application_namespace("app-7")
    assert indices == [f"logs-audit.otel-{namespace}", f"logs-generic.otel-{namespace}"]
    assert {d["application_id"] for d in docs} == {"app-7"}
    assert {d["data_stream"]["namespace"] for d in docs} == {namespace}


def test_application_namespaces_stay_apart_when_sanitized() -> None:
    """An id that is a valid namespace is used as is; others get a hash so none collide."""
    assert application_namespace("de_alpha") == "de_alpha"
    assert application_namespace("app-1") != application_namespace("app_1")
    assert application_namespace("app-1").startswith("app_1.")
    assert application_namespace("Ünï") != application_namespace("---")
