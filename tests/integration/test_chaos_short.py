"""The reduced fault-injection set (`python -m tests.chaos --short`) inside `make test`.

Each fault runs under load from six OTLP clients (three signals, gRPC and HTTP) against a real
`ingestd run`; the ledger must show no acknowledged loss, no duplicate, nothing stored that was
refused for good, and recovery once the fault is healed. About two minutes in all; the full
suite is `make chaos`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.chaos.environment import Environment, StackAddresses
from tests.chaos.faults import FAULTS, Fault
from tests.chaos.load import LoadConfig
from tests.chaos.runner import run_fault
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHORT = [f for f in FAULTS if f.short]


@pytest.fixture(scope="module")
async def chaos_env(stack: Stack) -> AsyncIterator[Environment]:
    env = Environment(
        StackAddresses(
            stack.pg_dsn, stack.pg_admin_dsn, stack.es_url, stack.redis_url, stack.script
        )
    )
    await env.start()
    yield env
    await env.close()


@pytest.mark.parametrize("fault", SHORT, ids=[f.name for f in SHORT])
async def test_fault_keeps_the_exactly_once_promise(chaos_env: Environment, fault: Fault) -> None:
    """Under this fault every acknowledged record is stored exactly once, and ingest recovers."""
    duration = float(os.environ.get("INGESTD_CHAOS_DURATION_S", "6"))
    result = await run_fault(chaos_env, fault, duration_s=duration, load=LoadConfig())
    assert not result.skipped, result.skipped
    assert not result.error, result.notes.get("traceback", result.error)
    assert result.verdict is not None
    v = result.verdict
    assert v.acked_requests > 0, "the load was acknowledged at all"
    assert result.recovered, f"no request acknowledged after the fault was healed: {result.heard}"
    assert v.missing == 0, v.examples
    assert v.duplicated == 0, v.examples
    assert v.stored_though_refused == 0, v.examples
    assert v.violations == 0, v.examples
    assert not result.notes.get("daemon_exceptions"), result.notes["daemon_exceptions"]
