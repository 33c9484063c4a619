"""Config sections of the shared state: redis, dedup, pressure, auth, limits, reload."""

from __future__ import annotations

import pytest

from ingestd import config
from ingestd.errors import ConfigError


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.parse(text, environ={})
    return info.value.problems


def test_defaults() -> None:
    """Dedup on for 15 minutes, auth off, no limits, a 25 ms Redis timeout."""
    cfg = config.parse("", environ={})
    assert cfg.redis.timeout_ms == 25
    assert cfg.redis.key_prefix == "ingestd:"
    assert cfg.dedup.enabled
    assert cfg.dedup.ttl_s == 900
    assert not cfg.auth.enabled
    assert cfg.limits.default.items_per_s is None
    assert cfg.reload.poll_interval_s == 3.0


def test_auth_enabled_without_tokens_is_refused() -> None:
    """Turning auth on with no token anywhere would refuse every request: a config error."""
    assert problems_of("auth: {enabled: true}") == [
        "auth: enabled without tokens, tokens_file or application_keys: every request would fail"
    ]


def test_short_token_and_bad_hash_are_refused() -> None:
    """Tokens shorter than 16 characters and malformed SHA-256 values name their path."""
    problems = problems_of(
        "auth:\n  tokens:\n    - {token: short, tenant: a}\n    - {token_sha256: xyz, tenant: b}\n"
    )
    assert problems[0].startswith("auth.tokens[0].token: ")
    assert problems[1].startswith("auth.tokens[1].token_sha256: ")


def test_pressure_staleness_must_exceed_the_publish_interval() -> None:
    """A replica would fade out between its own publications otherwise."""
    (problem,) = problems_of("pressure: {publish_interval_s: 2, stale_after_s: 1}")
    assert problem.startswith("pressure: stale_after_s must be > publish_interval_s")


def test_limits_accept_byte_units_and_tenant_entries() -> None:
    """bytes_per_s takes units; a tenant entry keeps only the keys it sets."""
    cfg = config.parse(
        "limits:\n  default: {bytes_per_s: 4MiB}\n  tenants: {acme: {items_per_s: 500}}\n",
        environ={},
    )
    assert cfg.limits.default.bytes_per_s == 4 * 1024 * 1024
    assert cfg.limits.tenants["acme"].model_fields_set == {"items_per_s"}
