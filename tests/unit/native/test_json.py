"""The native OTLP/JSON transcoder: where it answers, the request is the one Python decodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.convert import native
from ingestd.errors import BadRequest
from ingestd.model import Signal
from ingestd.receiver.otlp_json import parse_json
from ingestd.signals import SIGNALS
from tests.fuzz.strategies import json_bytes, mutated_json

EXAMPLES = Path(__file__).parents[2] / "data" / "otlp-examples"
FILES = {
    "trace.json": Signal.TRACES,
    "metrics.json": Signal.METRICS,
    "logs.json": Signal.LOGS,
    "events.json": Signal.LOGS,
}


def check(signal: Signal, body: bytes) -> bytes | None:
    """Transcode *body*; when the transcoder answers, Python must decode the same message."""
    proto = native.json_as_protobuf(signal, body)
    if proto is None:
        return None
    try:
        expected: Any = parse_json(signal, body)
    except BadRequest as exc:
        raise AssertionError(f"transcoded what Python refuses ({exc}): {body[:300]!r}") from exc
    got = SIGNALS[signal].request_type.FromString(proto)
    assert got == expected, body[:300]
    return proto


@pytest.mark.parametrize("name", sorted(FILES))
def test_example_files_transcode_to_the_same_request(name: str) -> None:
    """The opentelemetry-proto OTLP/JSON examples transcode natively, to Python's message."""
    assert check(FILES[name], (EXAMPLES / name).read_bytes()) is not None


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":" 5"}]}]}]}',
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":1.5}]}]}]}',
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0g"}]}]}]}',
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"flags":-1}]}]}]}',
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":18446744073709551616}]}]}]}',
        b'{"resourceSpans":[{"resource":{"attributes":[{"key":"a","value":{"doubleValue":"1_0"}}]}}]}',
        b"[]",
        b'{"resourceSpans":{}}',
    ],
)
def test_doubtful_or_invalid_input_is_left_to_python(body: bytes) -> None:
    """Whitespace, underscores, fractions, bad hex, out-of-range and 65-bit numbers: None."""
    assert native.json_as_protobuf(Signal.TRACES, body) is None


def test_both_field_name_styles_and_enum_names_transcode() -> None:
    """snake_case keys, enum names, int64 as strings, NaN as a string: the same message."""
    body = (
        b'{"resource_spans":[{"scopeSpans":[{"spans":[{"trace_id":"0102","kind":"SPAN_KIND_CLIENT",'
        b'"startTimeUnixNano":"17","endTimeUnixNano":18,"status":{"code":2},"attributes":['
        b'{"key":"x","value":{"doubleValue":"NaN"}},{"key":"y","value":{"bytesValue":"_-8"}},'
        b'{"key":"z","value":{"intValue":"-9"}}]}]}]}]}'
    )
    assert check(Signal.TRACES, body) is not None


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(list(Signal)), st.data())
def test_generated_json_transcodes_to_the_same_request(signal: Signal, data: st.DataObject) -> None:
    """Hypothesis OTLP/JSON (valid and mutated, tests/fuzz/strategies.py): equal or left."""
    check(signal, json_bytes(data.draw(mutated_json(signal))))
