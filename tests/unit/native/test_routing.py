"""Native vs Python logs routing: the `RoutePolicy` (allowlists, the cap, the fallback) and a
registered application's locked namespace give byte-identical bulk bodies and leave both
policies in the same state (routes taken, refusals counted)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from ingestd.convert import native
from ingestd.convert.logs import application_namespace
from ingestd.errors import BadRequest
from ingestd.model import Signal
from tests.fuzz import strategies
from tests.fuzz.differential import (
    APPLICATIONS,
    NOT_ROUTED,
    NOW_NS,
    POLICIES,
    Routing,
    compare,
    policy_state,
)
from tests.wire import mutated

DATASET = "data_stream.dataset"
NAMESPACE = "data_stream.namespace"


def _kv(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def _record(**routes: str) -> logs_pb2.LogRecord:
    """A record at NOW routed by *routes* (dataset=, namespace=)."""
    attributes = [_kv("data_stream." + key, value) for key, value in routes.items()]
    return logs_pb2.LogRecord(
        time_unix_nano=NOW_NS, body=common_pb2.AnyValue(string_value="x"), attributes=attributes
    )


def _request(*scopes: list[logs_pb2.LogRecord], resource_dataset: str = "") -> bytes:
    """One resource (routed to *resource_dataset* when given), one scope per record list."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", "api"))
    if resource_dataset:
        rl.resource.attributes.append(_kv(DATASET, resource_dataset))
    for records in scopes:
        rl.scope_logs.add().log_records.extend(records)
    return request.SerializeToString()


def _indexes(data: bytes) -> list[str]:
    lines = data.split(b"\n")
    return [line.split(b'"_index":"')[1].split(b'"')[0].decode() for line in lines[0:-1:2]]


def test_default_config_routes_by_attributes_identically() -> None:
    """from_attributes on (the default): resource, scope and record attributes pick the
    route in both codecs; each new route is taken by the policy once."""
    body = _request(
        [_record(), _record(dataset="Web Shop!"), _record(namespace="Team-A")],
        [_record(dataset="web_shop", namespace="x")],
        resource_dataset="res",
    )
    out = compare(Signal.LOGS, body)
    assert _indexes(out["data"]) == [
        "logs-res.otel-prod",
        "logs-web_shop.otel-prod",
        "logs-res.otel-team_a",
        "logs-web_shop.otel-x",
    ]
    assert out["policy"]["status"]["refused"] == 0
    assert len(out["policy"]["routes"]) == 4


def test_fallback_route_is_never_counted() -> None:
    """Records routed to the configured stream (the fallback) take no route and count
    nothing, in either codec."""
    body = _request([_record(dataset="app", namespace="PROD"), _record()])
    out = compare(Signal.LOGS, body, routing=Routing(max_routes=0))
    assert _indexes(out["data"]) == ["logs-app.otel-prod"] * 2
    assert out["policy"] == {
        "routes": [],
        "status": {"routes": 0, "max_routes": 0, "refused": 0},
    }


def test_allowlists_refuse_to_the_fallback_identically() -> None:
    """Datasets and namespaces outside the fnmatch allowlists go to the fallback and are
    counted as refused, once per scope and route, as the reference counts them."""
    routing = Routing(allowed_datasets=("a*", "[b-d]?.otel"), allowed_namespaces=("team_?",))
    body = _request(
        [_record(dataset="b1", namespace="team-a"), _record(dataset="zz"), _record(dataset="zz")],
        [_record(dataset="zz"), _record(dataset="ab", namespace="team_ab")],
    )
    out = compare(Signal.LOGS, body, routing=routing)
    assert _indexes(out["data"]) == [
        "logs-b1.otel-team_a",
        "logs-app.otel-prod",
        "logs-app.otel-prod",
        "logs-app.otel-prod",
        "logs-app.otel-prod",
    ]
    assert out["policy"]["routes"] == [("b1.otel", "team_a")]
    assert out["policy"]["status"]["refused"] == 3


def test_cap_reached_mid_request_identically() -> None:
    """max_data_streams reached in the middle of a request: the first routes are taken, the
    later ones go to the fallback, a taken route stays open, in both codecs."""
    routing = Routing(max_routes=2, taken=(("t.otel", "x"),))
    body = _request(
        [_record(dataset="a"), _record(dataset="b"), _record(dataset="c"), _record(dataset="a")],
        [_record(dataset="t", namespace="x"), _record(dataset="c")],
    )
    out = compare(Signal.LOGS, body, routing=routing)
    assert _indexes(out["data"]) == [
        "logs-a.otel-prod",
        "logs-app.otel-prod",
        "logs-app.otel-prod",
        "logs-a.otel-prod",
        "logs-t.otel-x",
        "logs-app.otel-prod",
    ]
    assert out["policy"]["status"] == {"routes": 2, "max_routes": 2, "refused": 3}


def test_routes_across_requests_share_one_policy() -> None:
    """One policy over a sequence of requests (the cap filled by earlier ones): both codecs,
    each with its own policy, answer every request alike and end in the same state."""
    routing = Routing(max_routes=3)
    reference = routing.converter()
    twin = routing.converter()
    compiled = native.NativeLogsConverter(twin, now_ns=lambda: NOW_NS)
    for n in range(6):
        body = _request([_record(dataset=f"d{n}"), _record(dataset=f"d{n % 2}")])
        request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
        expected, got = reference(request), compiled(body)
        assert bytes(got.payload.data) == bytes(expected.payload.data), n
    assert policy_state(twin) == policy_state(reference)
    assert reference.routes.status()["refused"] == 3


def test_a_refused_route_is_learned_once() -> None:
    """The first request meeting a refused route is converted twice, later ones once (the
    converter remembers the refusal), with the reference's bytes and counts each time."""
    routing = Routing(allowed_datasets=("a*",))
    reference = routing.converter()
    twin = routing.converter()
    compiled = native.NativeLogsConverter(twin, now_ns=lambda: NOW_NS)
    calls: list[object] = []
    convert = compiled._convert

    def counted(body: bytes, **options: object) -> object:
        calls.append(options["routes"])
        return convert(body, **options)

    compiled._convert = counted
    body = _request([_record(dataset="zz"), _record(dataset="ab")])
    for _ in range(3):
        request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
        assert bytes(compiled(body).payload.data) == bytes(reference(request).payload.data)
    assert len(calls) == 4
    assert policy_state(twin) == policy_state(reference)
    assert reference.routes.status()["refused"] == 3


def test_a_wrong_expectation_is_corrected() -> None:
    """A remembered answer the policy no longer gives is not trusted: the request is
    converted again with the policy's answer, and the memory forgets it."""
    reference = Routing().converter()
    compiled = native.NativeLogsConverter(reference, now_ns=lambda: NOW_NS)
    compiled._refused[("a.otel", "prod")] = ("app.otel", "prod")
    out = compiled(_request([_record(dataset="a")]))
    assert _indexes(bytes(out.payload.data)) == ["logs-a.otel-prod"]
    assert compiled._refused == {}


@pytest.mark.parametrize("app", APPLICATIONS[1:])
def test_registered_application_keeps_its_namespace(app: str) -> None:
    """A registered application's records stay in its namespace whatever their attributes
    say; datasets are admitted by the policy (ids that sanitize alike stay apart)."""
    routing = Routing(allowed_datasets=("a*",), max_routes=4)
    body = _request(
        [_record(dataset="ab", namespace="other"), _record(dataset="zz"), _record()],
        [_record(namespace="x")],
        resource_dataset="res",
    )
    out = compare(Signal.LOGS, body, app, routing=routing)
    namespace = application_namespace(app)
    assert _indexes(out["data"]) == [
        f"logs-ab.otel-{namespace}",
        f"logs-app.otel-{namespace}",
        f"logs-app.otel-{namespace}",
        f"logs-app.otel-{namespace}",
    ]
    assert f'"application_id":"{app}"'.encode() in out["data"]


def test_registered_application_ids_that_sanitize_alike_stay_apart() -> None:
    """`app-1` and `app_1` get different namespaces in both codecs."""
    body = _request([_record()])
    first = compare(Signal.LOGS, body, "app-1")
    second = compare(Signal.LOGS, body, "app_1")
    assert _indexes(first["data"]) != _indexes(second["data"])
    assert _indexes(second["data"]) == ["logs-app.otel-app_1"]


def test_registered_application_namespace_refused_by_allowlist() -> None:
    """allowed_namespaces not matching an application's namespace: its records still go to
    its namespace, the refusal is counted alike, even when the dataset does not change."""
    routing = Routing(allowed_namespaces=("prod",))
    out = compare(Signal.LOGS, _request([_record(), _record(dataset="q")]), "a1", routing=routing)
    assert _indexes(out["data"]) == ["logs-app.otel-a1"] * 2
    assert out["policy"]["status"]["refused"] == 2


def test_registered_application_not_routed_by_attributes() -> None:
    """from_attributes off: a registered application's records go to the configured dataset
    in its namespace; the policy still takes that route, as the reference does."""
    out = compare(Signal.LOGS, _request([_record(dataset="a")]), "a1", routing=NOT_ROUTED)
    assert _indexes(out["data"]) == ["logs-app.otel-a1"]
    assert out["policy"]["routes"] == [("app.otel", "a1")]


def test_refused_records_ask_nothing() -> None:
    """A record refused for its time asks the policy nothing in either codec."""
    future = _record(dataset="late")
    future.time_unix_nano = NOW_NS + 10**15
    out = compare(Signal.LOGS, _request([future, _record()]), routing=Routing(max_routes=0))
    assert out["rejected"] == 1
    assert out["policy"]["status"]["refused"] == 0


def test_invalid_request_leaves_the_policy_untouched() -> None:
    """A request found invalid after routed records (bad UTF-8 in a later record's value) is
    refused whole by both codecs, and neither policy took a route or counted a refusal."""
    bad = _record(dataset="late")
    bad.attributes.append(_kv("k", "ZZZZ"))
    body = _request([_record(dataset="a")], [_record(dataset="b"), bad])
    body = body.replace(b"ZZZZ", b"\xff\xfe\xfd\xfc")
    out = compare(Signal.LOGS, body, routing=Routing(max_routes=1))
    assert out == "BadRequest"


def test_answers_must_match_the_routes_asked() -> None:
    """The binding refuses a list of answers that does not fit the routes the request asks."""
    body = _request([_record(dataset="a")])
    with pytest.raises(ValueError, match="1 routes asked"):
        native._native.convert_logs(
            body,
            max_time_unix_nano=NOW_NS,
            now_unix_nano=NOW_NS,
            dataset="app.otel",
            namespace="prod",
            routes=[],
        )


def test_json_message_goes_to_the_reference() -> None:
    """A decoded message (OTLP/JSON left to the Python decoder) is converted by the
    reference, with the same policy."""
    routing = Routing(max_routes=0)
    reference = routing.converter()
    body = _request([_record(dataset="a")])
    message = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
    converted = native.NativeLogsConverter(reference)(message)
    assert converted.items == 1
    assert reference.routes.status()["refused"] == 1
    with pytest.raises(BadRequest):
        native.NativeLogsConverter(reference)(b"\xff")


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    strategies.LOGS,
    st.sampled_from(POLICIES),
    st.sampled_from(APPLICATIONS),
)
def test_generated_routed_requests_are_identical(
    request: logs_service_pb2.ExportLogsServiceRequest, routing: Routing, app: str
) -> None:
    """Hypothesis requests with data_stream.* attributes from a small pool, under every test
    policy and registered id: identical bytes, rejects and policy state."""
    compare(Signal.LOGS, request.SerializeToString(), app, routing=routing)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(strategies.LOGS, st.sampled_from(POLICIES[1:4]), st.sampled_from(APPLICATIONS), st.data())
def test_mutated_routed_requests_are_identical(
    request: logs_service_pb2.ExportLogsServiceRequest,
    routing: Routing,
    app: str,
    data: st.DataObject,
) -> None:
    """Generated requests with bytes flipped, cut or inserted under the tight policies: the
    same verdict and output, and a refused request leaves both policies as they were."""
    compare(Signal.LOGS, mutated(request.SerializeToString(), data), app, routing=routing)
