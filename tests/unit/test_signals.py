"""The per-signal declarations agree with the OTLP protocol they name."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool

from ingestd.model import Signal
from ingestd.signals import BY_GRPC_METHOD, BY_HTTP_PATH, SIGNALS, SignalSpec


def test_every_signal_is_declared_once() -> None:
    """Each Signal has exactly one spec, reachable by its HTTP path and its gRPC method."""
    assert set(SIGNALS) == set(Signal)
    assert {spec.signal for spec in BY_HTTP_PATH.values()} == set(Signal)
    assert {spec.signal for spec in BY_GRPC_METHOD.values()} == set(Signal)


@pytest.mark.parametrize("spec", SIGNALS.values(), ids=str)
def test_spec_matches_the_otlp_service(spec: SignalSpec) -> None:
    """The gRPC service's Export takes the request type and answers the response type."""
    service = descriptor_pool.Default().FindServiceByName(spec.grpc_service)
    export = service.FindMethodByName("Export")
    assert export.input_type.full_name == spec.request_type.DESCRIPTOR.full_name
    assert export.output_type.full_name == spec.response_type.DESCRIPTOR.full_name
    assert spec.decode_type.DESCRIPTOR.full_name == spec.request_type.DESCRIPTOR.full_name
    partial = spec.response_type.DESCRIPTOR.fields_by_name["partial_success"].message_type
    assert spec.rejected_field in partial.fields_by_name
    assert spec.http_path == f"/v1/{spec.signal}"


@pytest.mark.parametrize("spec", SIGNALS.values(), ids=str)
def test_item_count_of_an_empty_request_is_nothing(spec: SignalSpec) -> None:
    """Counting items of an empty request yields no resources."""
    assert list(spec.count_items(spec.request_type())) == []
