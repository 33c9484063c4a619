"""The lifecycle contract of the shared-state stages: stop without start, stop twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingestd.auth import Authenticator
from ingestd.config import (
    AuthConfig,
    Config,
    DedupConfig,
    LimitsConfig,
    PressureConfig,
    RedisConfig,
)
from ingestd.pipeline import Stage, deadline_in
from ingestd.reload import ConfigReloader
from ingestd.state.dedup import RedisDedup
from ingestd.state.pressure import ClusterPressure
from ingestd.state.ratelimit import RateLimiter
from ingestd.state.redis import RedisState


def stages(tmp_path: Path) -> list[Stage]:
    path = tmp_path / "ingestd.yaml"
    path.write_text("{}\n")
    redis = RedisState(RedisConfig())
    return [
        redis,
        RedisDedup(DedupConfig(), redis, in_flight_ttl_s=35),
        ClusterPressure(PressureConfig(), None),
        ConfigReloader(
            path, Config(), Authenticator(AuthConfig()), RateLimiter(LimitsConfig(), None)
        ),
    ]


@pytest.mark.parametrize("index", range(4))
async def test_stop_without_start_and_twice(tmp_path: Path, index: int) -> None:
    """stop() is fine before start() and idempotent after it, returning promptly."""
    stage = stages(tmp_path)[index]
    await stage.stop(deadline_in(1))
    async with asyncio.TaskGroup() as tasks:
        await stage.start(tasks)
        await stage.stop(deadline_in(1))
        await stage.stop(deadline_in(1))
