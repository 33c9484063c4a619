"""Logs routing by data_stream.* attributes: the switch, the allowlist, the route cap, and the
sanitized-name cache bounded by bytes."""

from __future__ import annotations

import sys

from ingestd.convert import logs
from ingestd.convert.logs import LogsConverter, RoutePolicy
from tests.unit.convert.test_logs import NOW, record, request


def _indices(converter: LogsConverter, *namespaces: str) -> list[str]:
    req = request(*(record(attributes={"data_stream.namespace": ns}) for ns in namespaces))
    out = converter(req)
    return [item.split(b'"_index":"')[1].split(b'"')[0].decode() for item in out.payload]


def test_routes_past_the_cap_go_to_the_configured_stream() -> None:
    """After max_routes distinct routes, records of new ones go to logs_dataset/namespace."""
    policy = RoutePolicy(max_routes=2)
    converter = LogsConverter(dataset="d", namespace="home", routes=policy, now_ns=lambda: NOW)
    assert _indices(converter, "a", "b", "c", "a", "home") == [
        "logs-d.otel-a",
        "logs-d.otel-b",
        "logs-d.otel-home",
        "logs-d.otel-a",
        "logs-d.otel-home",
    ]
    assert policy.status() == {"routes": 2, "max_routes": 2, "refused": 1}
    # The cap is the process's: a second request cannot open more.
    assert _indices(converter, "z") == ["logs-d.otel-home"]


def test_allowlist_patterns_admit_only_matching_routes() -> None:
    """Only namespaces matching allowed_namespaces are routed to; the rest go home."""
    policy = RoutePolicy(allowed_namespaces=["team_*"])
    converter = LogsConverter(namespace="home", routes=policy, now_ns=lambda: NOW)
    assert _indices(converter, "team_a", "random1") == [
        "logs-generic.otel-team_a",
        "logs-generic.otel-home",
    ]


def test_routing_off_keeps_the_attributes_and_the_configured_stream() -> None:
    """from_attributes off: every record goes to the configured stream, attributes stay."""
    converter = LogsConverter(
        namespace="home", routes=RoutePolicy(from_attributes=False), now_ns=lambda: NOW
    )
    out = converter(
        request(
            record(attributes={"data_stream.namespace": "x"}),
            resource={"service.name": "s", "data_stream.dataset": "y"},
        )
    )
    (item,) = out.payload
    assert b'"_index":"logs-generic.otel-home"' in item
    assert b'"data_stream.namespace":"x"' in item
    assert b'"data_stream.dataset":"y"' in item


def test_megabyte_names_cost_the_sanitizer_cache_little() -> None:
    """The sanitized-name cache keys on the first 100 characters: 1 MB values stay small."""
    logs._sanitized.clear()
    for i in range(20):
        value = "n" * 99 + chr(ord("a") + i) + "x" * 1_000_000
        assert logs.sanitize_namespace(value) == "n" * 99 + chr(ord("a") + i)
    held = sum(sys.getsizeof(value) for value, _ in logs._sanitized)
    assert held < 20 * 200
