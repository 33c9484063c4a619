"""application_id: the id every converter derives from a resource (docs/design.md)."""

from __future__ import annotations

import xxhash
from opentelemetry.proto.common.v1 import common_pb2

from ingestd.convert.identity import application_id, application_id_of


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
