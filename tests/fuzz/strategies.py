"""Hypothesis strategies that build OTLP export requests (official protobuf classes).

Values lean towards the edges the converters must handle: ids of every length and all zero,
timestamps 0, near now, far future and beyond int64, enums beyond their named values and beyond
int16, NaN and infinities, NUL characters, strings that look like SQL or Elasticsearch queries,
nested AnyValues, and duplicate keys. Sizes stay small so that each example runs in about a
millisecond; the hand-made cases (tests/unit/fuzz) cover the big inputs.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from ingestd.model import Signal
from tests.fuzz.targets import NOW_NS

INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.integers(0, 2**32 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)
SMALL = st.integers(0, 3)

HOSTILE_TEXT = (
    "'; DROP TABLE traces; --",
    "1' OR '1'='1",
    "$$ language plpgsql $$",
    "\\x00\\\\u0000",
    '{"query":{"match_all":{}}}',
    "*:* OR _id:*",
    "logs-*,-logs-x",
    "_index",
    "@timestamp",
    "data_stream.dataset",
    "service.name",
    "..",
    "a.b..c.",
    "\ufffd\u202e\u0301",
)

TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(HOSTILE_TEXT),
    st.text(alphabet=st.sampled_from("a.\x00-_*:\"'\\ \u00e9\U0001f600"), max_size=8),
)
NAMES = st.one_of(
    TEXT,
    st.sampled_from(
        (
            "service.name",
            "service.namespace",
            "deployment.environment",
            "data_stream.dataset",
            "data_stream.namespace",
            "data_stream.type",
            "event.name",
            "",
        )
    ),
)

TIME = st.one_of(
    st.just(0),
    st.integers(NOW_NS - 10**12, NOW_NS + 10**9),
    st.integers(NOW_NS, NOW_NS + 10**18),
    st.integers(2**63 - 10, 2**63 + 10),
    UINT64,
)
DOUBLE = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    (0.0, -0.0, 1e16, 1e308, 5e-324, float("nan"), float("inf"), float("-inf"))
)
ENUM = st.one_of(SMALL, INT32, st.sampled_from((2**15 - 1, 2**15, -1, 2**16)))


def ids(size: int) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(min_size=size, max_size=size),
        st.just(bytes(size)),
        st.binary(max_size=size + 2),
    )


def _any_value(children: st.SearchStrategy[common_pb2.AnyValue]) -> st.SearchStrategy[Any]:
    arrays = st.lists(children, max_size=3).map(
        lambda values: common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=values))
    )
    kvlists = st.lists(st.tuples(NAMES, children), max_size=3).map(
        lambda pairs: common_pb2.AnyValue(
            kvlist_value=common_pb2.KeyValueList(
                values=[common_pb2.KeyValue(key=k, value=v) for k, v in pairs]
            )
        )
    )
    return st.one_of(arrays, kvlists)


def _nested(depth: int, as_list: bool) -> common_pb2.AnyValue:
    value = common_pb2.AnyValue(string_value="leaf")
    for _ in range(depth):
        if as_list:
            value = common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[value]))
        else:
            value = common_pb2.AnyValue(
                kvlist_value=common_pb2.KeyValueList(
                    values=[common_pb2.KeyValue(key="k", value=value)]
                )
            )
    return value


# Deep values up to protobuf's limit: upb parses (and builds) 100 levels of messages, and an
# AnyValue level is two (array) or three (kvlist) of them. Deeper inputs come from the JSON
# mutations, the raw byte fuzzer and the hand-made cases.
DEEP_VALUE = st.builds(_nested, st.integers(10, 28), st.booleans())

_SHALLOW_VALUE = st.recursive(
    st.one_of(
        st.just(common_pb2.AnyValue()),
        TEXT.map(lambda v: common_pb2.AnyValue(string_value=v)),
        st.booleans().map(lambda v: common_pb2.AnyValue(bool_value=v)),
        INT64.map(lambda v: common_pb2.AnyValue(int_value=v)),
        DOUBLE.map(lambda v: common_pb2.AnyValue(double_value=v)),
        st.binary(max_size=8).map(lambda v: common_pb2.AnyValue(bytes_value=v)),
    ),
    _any_value,
    max_leaves=6,
)
ANY_VALUE = st.one_of(_SHALLOW_VALUE, _SHALLOW_VALUE, _SHALLOW_VALUE, DEEP_VALUE)
ATTRIBUTES = st.lists(st.builds(common_pb2.KeyValue, key=NAMES, value=ANY_VALUE), max_size=4)
RESOURCE = st.builds(resource_pb2.Resource, attributes=ATTRIBUTES, dropped_attributes_count=UINT32)


def _scope(attributes: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        common_pb2.InstrumentationScope,
        name=TEXT,
        version=TEXT,
        attributes=attributes,
        dropped_attributes_count=UINT32,
    )


SCOPE = _scope(ATTRIBUTES)

# Logs routing: data_stream.* values from a small pool, so that routes repeat across records
# and scopes, match the differential policies' fnmatch patterns (tests/fuzz/differential.py
# POLICIES) or not, reach their caps, sanitize to nothing or to the fallback's names.
ROUTE_VALUES = st.one_of(
    st.sampled_from(
        (
            *("a", "ab", "b1", "c2.otel", "Web Shop!", "team-a", "Team_B", "x", "xy", "prod"),
            *("Prod", "app", "", "._", "c?", "t", "\u00c5", "generic"),
        )
    ),
    st.text(alphabet="abx_-.", max_size=3),
)
ROUTE_ATTRIBUTE = st.one_of(
    st.builds(
        lambda key, value: common_pb2.KeyValue(
            key=key, value=common_pb2.AnyValue(string_value=value)
        ),
        st.sampled_from(("data_stream.dataset", "data_stream.namespace", "data_stream.type")),
        ROUTE_VALUES,
    ),
    st.builds(common_pb2.KeyValue, key=st.just("data_stream.dataset"), value=ANY_VALUE),
)
ROUTED_ATTRIBUTES = st.lists(
    st.one_of(
        ROUTE_ATTRIBUTE, ROUTE_ATTRIBUTE, st.builds(common_pb2.KeyValue, key=NAMES, value=ANY_VALUE)
    ),
    max_size=4,
)
ROUTED_RESOURCE = st.builds(
    resource_pb2.Resource, attributes=ROUTED_ATTRIBUTES, dropped_attributes_count=UINT32
)
ROUTED_SCOPE = _scope(ROUTED_ATTRIBUTES)


def _export(
    request: Any,
    resources: str,
    resource: Any,
    scopes: str,
    scope: Any,
    items: str,
    item: st.SearchStrategy[Any],
    resource_strategy: st.SearchStrategy[Any] = RESOURCE,
    scope_strategy: st.SearchStrategy[Any] = SCOPE,
) -> st.SearchStrategy[Any]:
    """An export request: up to 2 resources, each of up to 2 scopes of up to 3 items."""
    in_scope = st.builds(
        scope, scope=scope_strategy, schema_url=TEXT, **{items: st.lists(item, max_size=3)}
    )
    in_resource = st.builds(
        resource,
        resource=resource_strategy,
        schema_url=TEXT,
        **{scopes: st.lists(in_scope, max_size=2)},
    )
    return st.builds(request, **{resources: st.lists(in_resource, max_size=2)})


EVENT = st.builds(
    trace_pb2.Span.Event,
    time_unix_nano=TIME,
    name=TEXT,
    attributes=ATTRIBUTES,
    dropped_attributes_count=UINT32,
)
LINK = st.builds(
    trace_pb2.Span.Link,
    trace_id=ids(16),
    span_id=ids(8),
    trace_state=TEXT,
    attributes=ATTRIBUTES,
    dropped_attributes_count=UINT32,
    flags=UINT32,
)
SPAN = st.builds(
    trace_pb2.Span,
    trace_id=ids(16),
    span_id=ids(8),
    trace_state=TEXT,
    parent_span_id=st.one_of(st.just(b""), ids(8)),
    flags=UINT32,
    name=TEXT,
    kind=ENUM,
    start_time_unix_nano=TIME,
    end_time_unix_nano=TIME,
    attributes=ATTRIBUTES,
    dropped_attributes_count=UINT32,
    events=st.lists(EVENT, max_size=2),
    dropped_events_count=UINT32,
    links=st.lists(LINK, max_size=2),
    dropped_links_count=UINT32,
    status=st.builds(trace_pb2.Status, message=TEXT, code=ENUM),
)


def _spans_in_time(span: trace_pb2.Span, fix: bool) -> trace_pb2.Span:
    # Half the spans get a valid window, so the storable path is exercised as much as refusals.
    if fix:
        span.start_time_unix_nano = NOW_NS - 10**9
        span.end_time_unix_nano = NOW_NS
    return span


TRACES = _export(
    trace_service_pb2.ExportTraceServiceRequest,
    "resource_spans",
    trace_pb2.ResourceSpans,
    "scope_spans",
    trace_pb2.ScopeSpans,
    "spans",
    st.builds(_spans_in_time, SPAN, st.booleans()),
)

EXEMPLAR = st.builds(
    metrics_pb2.Exemplar,
    filtered_attributes=ATTRIBUTES,
    time_unix_nano=TIME,
    as_double=DOUBLE,
    span_id=ids(8),
    trace_id=ids(16),
)


def _number_point(value: Any, as_int: bool, **kwargs: Any) -> metrics_pb2.NumberDataPoint:
    point = metrics_pb2.NumberDataPoint(**kwargs)
    if value is None:
        return point
    if as_int:
        point.as_int = value if isinstance(value, int) else 0
    else:
        point.as_double = float(value)
    return point


POINT_COMMON = {
    "attributes": ATTRIBUTES,
    "start_time_unix_nano": TIME,
    "time_unix_nano": st.one_of(TIME, st.just(NOW_NS - 10**9)),
    "exemplars": st.lists(EXEMPLAR, max_size=2),
    "flags": UINT32,
}
NUMBER_POINT = st.builds(
    _number_point,
    st.one_of(st.none(), INT64, DOUBLE),
    st.booleans(),
    **POINT_COMMON,
)
HISTOGRAM_POINT = st.builds(
    metrics_pb2.HistogramDataPoint,
    count=UINT64,
    sum=DOUBLE,
    bucket_counts=st.lists(UINT64, max_size=4),
    explicit_bounds=st.lists(DOUBLE, max_size=4),
    min=DOUBLE,
    max=DOUBLE,
    **POINT_COMMON,
)
BUCKETS = st.builds(
    metrics_pb2.ExponentialHistogramDataPoint.Buckets,
    offset=INT32,
    bucket_counts=st.lists(UINT64, max_size=4),
)
EXPONENTIAL_POINT = st.builds(
    metrics_pb2.ExponentialHistogramDataPoint,
    count=UINT64,
    sum=DOUBLE,
    scale=INT32,
    zero_count=UINT64,
    positive=BUCKETS,
    negative=BUCKETS,
    min=DOUBLE,
    max=DOUBLE,
    zero_threshold=DOUBLE,
    **POINT_COMMON,
)
SUMMARY_POINT = st.builds(
    metrics_pb2.SummaryDataPoint,
    attributes=ATTRIBUTES,
    start_time_unix_nano=TIME,
    time_unix_nano=st.one_of(TIME, st.just(NOW_NS - 10**9)),
    count=UINT64,
    sum=DOUBLE,
    quantile_values=st.lists(
        st.builds(metrics_pb2.SummaryDataPoint.ValueAtQuantile, quantile=DOUBLE, value=DOUBLE),
        max_size=3,
    ),
    flags=UINT32,
)


def _points(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, max_size=3)


def _metric(name: str, unit: str, description: str, data: tuple[str, Any]) -> Any:
    metric = metrics_pb2.Metric(name=name, unit=unit, description=description)
    kind, value = data
    if kind:
        getattr(metric, kind).CopyFrom(value)
    return metric


DATA = st.one_of(
    st.just(("", None)),
    st.builds(lambda p: ("gauge", metrics_pb2.Gauge(data_points=p)), _points(NUMBER_POINT)),
    st.builds(
        lambda p, t, m: (
            "sum",
            metrics_pb2.Sum(data_points=p, aggregation_temporality=t, is_monotonic=m),
        ),
        _points(NUMBER_POINT),
        ENUM,
        st.booleans(),
    ),
    st.builds(
        lambda p, t: ("histogram", metrics_pb2.Histogram(data_points=p, aggregation_temporality=t)),
        _points(HISTOGRAM_POINT),
        ENUM,
    ),
    st.builds(
        lambda p, t: (
            "exponential_histogram",
            metrics_pb2.ExponentialHistogram(data_points=p, aggregation_temporality=t),
        ),
        _points(EXPONENTIAL_POINT),
        ENUM,
    ),
    st.builds(lambda p: ("summary", metrics_pb2.Summary(data_points=p)), _points(SUMMARY_POINT)),
)
METRIC = st.builds(_metric, TEXT, TEXT, TEXT, DATA)
METRICS = _export(
    metrics_service_pb2.ExportMetricsServiceRequest,
    "resource_metrics",
    metrics_pb2.ResourceMetrics,
    "scope_metrics",
    metrics_pb2.ScopeMetrics,
    "metrics",
    METRIC,
)

LOG_RECORD = st.builds(
    logs_pb2.LogRecord,
    time_unix_nano=TIME,
    observed_time_unix_nano=TIME,
    severity_number=ENUM,
    severity_text=TEXT,
    body=ANY_VALUE,
    attributes=st.one_of(ATTRIBUTES, ROUTED_ATTRIBUTES),
    dropped_attributes_count=UINT32,
    flags=UINT32,
    trace_id=ids(16),
    span_id=ids(8),
    event_name=TEXT,
)
LOGS = _export(
    logs_service_pb2.ExportLogsServiceRequest,
    "resource_logs",
    logs_pb2.ResourceLogs,
    "scope_logs",
    logs_pb2.ScopeLogs,
    "log_records",
    LOG_RECORD,
    st.one_of(RESOURCE, ROUTED_RESOURCE),
    st.one_of(SCOPE, ROUTED_SCOPE),
)

REQUESTS: dict[Signal, st.SearchStrategy[Any]] = {
    Signal.TRACES: TRACES,
    Signal.METRICS: METRICS,
    Signal.LOGS: LOGS,
}

# -- OTLP/JSON ------------------------------------------------------------------------------------

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.sampled_from(
        (
            "NaN",
            "Infinity",
            "-Infinity",
            "1e3",
            "1.5",
            "-0",
            "0x10",
            "",
            "ff" * 8,
            "00" * 16,
            "AAAA",
            "SPAN_KIND_SERVER",
            "1e400",
            "9" * 30,
        )
    ),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def json_bytes(document: Any) -> bytes:
    """*document* as JSON; the stdlib encoder for documents nested deeper than orjson's 254."""
    import json
    import sys

    import orjson

    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20_000))
        try:
            return json.dumps(document).encode()
        finally:
            sys.setrecursionlimit(limit)


_HEX_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def otlp_json(message: Any) -> Any:
    """*message* in OTLP/JSON form: proto3 JSON with hex ids (as the SDKs send it)."""
    from google.protobuf import json_format

    return _hex_ids(json_format.MessageToDict(message))


def _hex_ids(value: Any) -> Any:
    import base64

    if isinstance(value, dict):
        return {
            k: base64.b64decode(v).hex() if k in _HEX_KEYS and isinstance(v, str) else _hex_ids(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every subtree's path, in pre-order; iterative, since a "deepen" mutation nests values
    deeper than Python's recursion limit."""
    found: list[tuple[Any, ...]] = []
    stack = [(value, path)]
    while stack:
        node, at = stack.pop()
        found.append(at)
        if isinstance(node, dict):
            children = [(v, (*at, k)) for k, v in node.items()]
        elif isinstance(node, list):
            children = [(v, (*at, i)) for i, v in enumerate(node)]
        else:
            continue
        stack.extend(reversed(children))
    return found


@st.composite
def mutated_json(draw: st.DrawFn, signal: Signal) -> Any:
    """A valid OTLP/JSON request with a few subtrees replaced, removed or added."""
    document = otlp_json(draw(REQUESTS[signal]))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(("replace", "delete", "add", "deepen")))
        if not path:
            if action == "replace":
                document = draw(JSON_VALUE)
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(JSON_VALUE)
        elif action == "deepen":
            value, wrap = parent[last], draw(st.sampled_from(("kv", "array", "list")))
            for _ in range(draw(st.integers(10, 400))):
                if wrap == "kv":
                    value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
                else:
                    value = {"arrayValue": {"values": [value]}} if wrap == "array" else [value]
            parent[last] = value
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(JSON_VALUE)
        else:
            parent.append(draw(JSON_VALUE))
    return document
