"""OTLP/JSON decoding: the spec's deviations from proto3 JSON, and clear errors."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format

from ingestd.errors import BadRequest
from ingestd.model import Signal
from ingestd.receiver.otlp_json import parse_json
from ingestd.signals import SIGNALS

EXAMPLES = Path(__file__).parents[2] / "data" / "otlp-examples"
_IDS = ("traceId", "spanId", "parentSpanId")


def _hex_to_base64(node: Any) -> Any:
    """The same document as standard proto3 JSON (base64 ids), for json_format as the oracle."""
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in _IDS and isinstance(v, str)
            else _hex_to_base64(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_to_base64(v) for v in node]
    return node


@pytest.mark.parametrize(
    ("name", "signal"),
    [
        ("logs.json", Signal.LOGS),
        ("events.json", Signal.LOGS),
        ("trace.json", Signal.TRACES),
        ("metrics.json", Signal.METRICS),
    ],
)
def test_published_examples_decode_like_json_format(name: str, signal: Signal) -> None:
    """The opentelemetry-proto examples decode to what json_format makes of them (ids fixed)."""
    body = (EXAMPLES / name).read_bytes()
    ours = parse_json(signal, body)
    oracle = json_format.ParseDict(
        _hex_to_base64(orjson.loads(body)), SIGNALS[signal].request_type()
    )
    assert ours == oracle
    assert ours.ByteSize() > 0


def test_example_log_fields() -> None:
    """Hex ids, 64-bit integers as strings, integer enums and typed attributes land exactly."""
    req = parse_json(Signal.LOGS, (EXAMPLES / "logs.json").read_bytes())
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    assert rec.trace_id == bytes.fromhex("5B8EFFF798038103D269B633813FC60C")
    assert rec.span_id == bytes.fromhex("EEE19B7EC3C1B174")
    assert rec.time_unix_nano == 1544712660300000000
    assert rec.severity_number == 10
    values = {a.key: a.value for a in rec.attributes}
    assert values["int.attribute"].int_value == 10
    assert values["double.attribute"].double_value == 637.704
    assert values["boolean.attribute"].bool_value is True
    assert [v.string_value for v in values["array.attribute"].array_value.values] == [
        "many",
        "values",
    ]


def test_span_parent_and_kind() -> None:
    """parentSpanId is hex too; kind is an integer enum."""
    req = parse_json(Signal.TRACES, (EXAMPLES / "trace.json").read_bytes())
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert span.parent_span_id == bytes.fromhex("EEE19B7EC3C1B173")
    assert span.kind == 2


def test_unknown_fields_are_ignored() -> None:
    """The spec requires ignoring unknown fields at every level."""
    data = orjson.loads((EXAMPLES / "logs.json").read_bytes())
    noisy = copy.deepcopy(data)
    noisy["futureField"] = {"x": 1}
    noisy["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["newThing"] = [1, 2]
    assert parse_json(Signal.LOGS, orjson.dumps(noisy)) == parse_json(
        Signal.LOGS, orjson.dumps(data)
    )


def test_snake_case_names_and_numeric_forms_are_accepted() -> None:
    """Like the Collector: original field names, numbers for int64, enum names, null defaults."""
    body = orjson.dumps(
        {
            "resource_logs": [
                {
                    "scope_logs": [
                        {
                            "log_records": [
                                {
                                    "time_unix_nano": 1544712660300000000,
                                    "severity_number": "SEVERITY_NUMBER_WARN",
                                    "observedTimeUnixNano": "1e3",
                                    "body": {"doubleValue": "NaN"},
                                    "severityText": None,
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )
    rec = parse_json(Signal.LOGS, body).resource_logs[0].scope_logs[0].log_records[0]
    assert rec.time_unix_nano == 1544712660300000000
    assert rec.observed_time_unix_nano == 1000
    assert rec.severity_number == 13
    assert rec.body.double_value != rec.body.double_value  # NaN
    assert rec.severity_text == ""


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"resourceLogs": {}}', "resourceLogs"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', "traceId"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}',
            "timeUnixNano",
        ),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "-1"}]}]}]}',
            "timeUnixNano",
        ),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityText": 5}]}]}]}',
            "severityText",
        ),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"flags": 1.5}]}]}]}', "flags"),
        (b'{"resourceLogs": [{"resource": [1]}]}', "resource"),
    ],
)
def test_malformed_bodies_are_bad_requests_naming_the_field(body: bytes, where: str) -> None:
    """Malformed JSON or a wrongly typed field is a 400 whose message points at the problem."""
    with pytest.raises(BadRequest, match=where):
        parse_json(Signal.LOGS, body)


def test_example_metric_points() -> None:
    """64-bit counts as strings and repeated int64 bucket counts decode exactly."""
    req = parse_json(Signal.METRICS, (EXAMPLES / "metrics.json").read_bytes())
    metrics = {m.name: m for m in req.resource_metrics[0].scope_metrics[0].metrics}
    counter = metrics["my.counter"].sum
    assert counter.is_monotonic
    assert counter.aggregation_temporality == 1
    assert counter.data_points[0].as_double == 5.0
    histogram = metrics["my.histogram"].histogram.data_points[0]
    assert (histogram.count, list(histogram.bucket_counts)) == (2, [1, 1])
    assert list(histogram.explicit_bounds) == [1.0]
    exponential = metrics["my.exponential.histogram"].exponential_histogram.data_points[0]
    assert (exponential.zero_count, list(exponential.positive.bucket_counts)) == (1, [0, 2])
    assert exponential.positive.offset == 1
