"""A short, bounded run of the structure-aware fuzzers (the long sessions: python -m tests.fuzz)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.model import Signal
from tests.fuzz.strategies import REQUESTS, json_bytes, mutated_json
from tests.fuzz.targets import Target

# Requests can be large; hypothesis warns when it builds their repr for a report.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
TARGET = Target()
SHORT = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@SHORT
@given(st.sampled_from(list(Signal)), st.data())
def test_protobuf_requests_get_a_documented_status(signal: Signal, data: st.DataObject) -> None:
    """Any OTLP protobuf request decodes and converts into storable rows or a 4xx status."""
    body = data.draw(REQUESTS[signal]).SerializeToString()
    assert TARGET.protobuf(signal, body).http_status in (200, 400)


@SHORT
@given(st.sampled_from(list(Signal)), st.data())
def test_json_requests_get_a_documented_status(signal: Signal, data: st.DataObject) -> None:
    """Any mutated OTLP/JSON request converts into storable rows or a 400."""
    body = json_bytes(data.draw(mutated_json(signal)))
    assert TARGET.json(signal, body).http_status in (200, 400)


@SHORT
@given(st.sampled_from(list(Signal)), st.binary(max_size=512), st.booleans())
def test_random_bytes_get_a_documented_status(signal: Signal, body: bytes, as_json: bool) -> None:
    """Arbitrary bytes as protobuf or JSON are a 400 or a request (never an internal error)."""
    run = TARGET.json if as_json else TARGET.protobuf
    assert run(signal, body).http_status in (200, 400)
