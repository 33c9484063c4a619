"""Native vs Python logs codec: byte-identical `_bulk` bodies (ids, routing) and rejects."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from ingestd.model import Signal
from ingestd.receiver.otlp_json import parse_json
from tests.fuzz import strategies
from tests.fuzz.differential import NOW_NS, compare
from tests.wire import mutated

EXAMPLES = Path(__file__).parents[2] / "data" / "otlp-examples"


def _kv(key: str, **value: object) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


def _array(*values: common_pb2.AnyValue) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=values))


def _body(*records: logs_pb2.LogRecord, resource: list[common_pb2.KeyValue] | None = None) -> bytes:
    request = logs_service_pb2.ExportLogsServiceRequest()
    rl = request.resource_logs.add(schema_url="https://r")
    rl.resource.CopyFrom(
        resource_pb2.Resource(attributes=resource or [_kv("service.name", string_value="api")])
    )
    sl = rl.scope_logs.add()
    sl.scope.name = "logger"
    sl.scope.attributes.append(_kv("data_stream.namespace", string_value="Team-A"))
    sl.log_records.extend(records)
    return request.SerializeToString()


@pytest.mark.parametrize("name", ["logs.json", "events.json"])
def test_example_files_are_identical(name: str) -> None:
    """The opentelemetry-proto log examples give the same bulk bytes in both codecs."""
    request = parse_json(Signal.LOGS, (EXAMPLES / name).read_bytes())
    out = compare(Signal.LOGS, request.SerializeToString())
    assert out["items"] >= 1


HOSTILE = {
    "plain": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS - 1, body=common_pb2.AnyValue(string_value="hi")
    ),
    "no time": logs_pb2.LogRecord(observed_time_unix_nano=NOW_NS + 10**15, severity_number=9),
    "nothing": logs_pb2.LogRecord(),
    "future": logs_pb2.LogRecord(time_unix_nano=NOW_NS + 10**15),
    "scalars": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS,
        severity_text="WARN\x00",
        severity_number=-3,
        trace_id=b"\x01" * 16,
        span_id=b"\x02\x03",
        flags=2**32 - 1,
        dropped_attributes_count=4,
        body=common_pb2.AnyValue(double_value=1e16),
    ),
    "mixed arrays": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS,
        attributes=[
            _kv(
                "nums",
                array_value=common_pb2.ArrayValue(
                    values=[
                        common_pb2.AnyValue(int_value=1),
                        common_pb2.AnyValue(double_value=0.5),
                        common_pb2.AnyValue(),
                    ]
                ),
            ),
            _kv(
                "mix",
                array_value=common_pb2.ArrayValue(
                    values=[
                        common_pb2.AnyValue(bool_value=True),
                        common_pb2.AnyValue(int_value=2),
                        common_pb2.AnyValue(string_value="s"),
                        _array(common_pb2.AnyValue(double_value=float("nan"))),
                    ]
                ),
            ),
            _kv("bytes", bytes_value=b"\x00\xff"),
            _kv("inf", double_value=float("-inf")),
            _kv("", string_value="blank"),
            _kv(" \x1c", int_value=3),
            _kv("\u3000", int_value=4),
            _kv("event.name", string_value="clicked"),
            _kv("data_stream.dataset", string_value="Web Shop!"),
            _kv("data_stream.type", string_value="metrics"),
        ],
        body=common_pb2.AnyValue(
            kvlist_value=common_pb2.KeyValueList(
                values=[
                    _kv(
                        "a",
                        array_value=common_pb2.ArrayValue(
                            values=[
                                common_pb2.AnyValue(int_value=1),
                                common_pb2.AnyValue(string_value="x"),
                            ]
                        ),
                    )
                ]
            )
        ),
    ),
    "body array of maps": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS,
        body=_array(
            common_pb2.AnyValue(
                kvlist_value=common_pb2.KeyValueList(values=[_kv("k", bool_value=False)])
            )
        ),
        event_name="e",
    ),
    "body array": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS, body=_array(common_pb2.AnyValue(int_value=1))
    ),
    "body bool": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS, body=common_pb2.AnyValue(bool_value=True)
    ),
    "body bytes": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS, body=common_pb2.AnyValue(bytes_value=b"\x01")
    ),
    "body nan": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS, body=common_pb2.AnyValue(double_value=float("nan"))
    ),
    "body strindex": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS, body=common_pb2.AnyValue(string_value_strindex=3)
    ),
    "body empty string": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS, body=common_pb2.AnyValue(string_value="")
    ),
    "body small float": logs_pb2.LogRecord(
        time_unix_nano=NOW_NS, body=common_pb2.AnyValue(double_value=2.5e-7)
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_record_is_identical(case: str) -> None:
    """Each hostile record gets the same bulk item (or reject) from both codecs."""
    compare(Signal.LOGS, _body(HOSTILE[case], HOSTILE["plain"]))


def test_repeated_records_get_ordinals_identically() -> None:
    """The same record three times: three ids, the same in both codecs."""
    compare(Signal.LOGS, _body(HOSTILE["plain"], HOSTILE["plain"], HOSTILE["plain"]))


def test_identity_edge_cases_are_identical() -> None:
    """service.name empty, numeric, doubles and environments: the same application_id."""
    for resource in (
        [_kv("service.name", string_value="")],
        [
            _kv("service.name", double_value=1e16),
            _kv("deployment.environment.name", double_value=float("inf")),
        ],
        [
            _kv("service.name", int_value=-1),
            _kv("deployment.environment"),
            _kv("deployment.environment.name", string_value="x"),
        ],
        [_kv("service.namespace", bool_value=True), _kv("data_stream.dataset", string_value="Ü-x")],
    ):
        compare(Signal.LOGS, _body(HOSTILE["plain"], resource=resource))
    compare(Signal.LOGS, _body(HOSTILE["plain"]), application_id="00000000000000aa")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(strategies.LOGS)
def test_generated_requests_are_identical(
    request: logs_service_pb2.ExportLogsServiceRequest,
) -> None:
    """Hypothesis-built requests (tests/fuzz/strategies.py) convert identically."""
    compare(Signal.LOGS, request.SerializeToString())


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(strategies.LOGS, st.data())
def test_mutated_requests_are_identical(
    request: logs_service_pb2.ExportLogsServiceRequest, data: st.DataObject
) -> None:
    """Generated requests with bytes flipped, cut or inserted: same verdict and same output."""
    compare(Signal.LOGS, mutated(request.SerializeToString(), data))
