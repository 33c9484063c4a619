"""The Stage protocol every long-running piece follows, and the ordered start/stop of a chain.

Stages are started downstream first (sinks -> batchers -> receivers) and stopped upstream first
(receivers -> batchers -> sinks), so each one drains into a consumer that is still alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import structlog

log = structlog.get_logger("ingestd.pipeline")


class Stage(Protocol):
    name: str

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        """Acquire resources, spawn loops into *tasks*, return once ready to consume."""

    async def stop(self, deadline: float) -> None:
        """Stop accepting, flush downstream, release. Idempotent; fine without start().

        *deadline* is a `time.monotonic()` value; the stage returns by then, giving up
        (and saying so in a log line and a counter) on what it could not finish.
        """


class StartupError(Exception):
    """A stage failed to start; the message is the one line the operator sees."""


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Stop a stage's periodic loop: cancel *task* (None: never started) and wait until it ends."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Pipeline:
    """An ordered chain of stages, given downstream first."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self._started: list[Stage] = []

    async def start(self, tasks: asyncio.TaskGroup, *, timeout_s: float = 60.0) -> None:
        """Start every stage, downstream first; on a failure stop what started and raise."""
        for stage in self.stages:
            began = time.monotonic()
            try:
                async with asyncio.timeout(timeout_s):
                    await stage.start(tasks)
            except Exception as exc:
                await self.stop(deadline_in(10.0))
                raise StartupError(f"{stage.name}: {_one_line(exc)}") from exc
            self._started.append(stage)
            log.info("stage_started", stage=stage.name, ms=round((time.monotonic() - began) * 1e3))

    async def stop(self, deadline: float) -> None:
        """Stop started stages, upstream first, each bounded by the shared deadline."""
        while self._started:
            stage = self._started.pop()
            began = time.monotonic()
            try:
                async with asyncio.timeout(remaining(deadline) + 1.0):
                    await stage.stop(deadline)
            except TimeoutError:
                log.error("stage_stop_timeout", stage=stage.name)
            except Exception as exc:  # noqa: BLE001 - one stage failing to stop must not stop the rest
                log.error("stage_stop_failed", stage=stage.name, error=_one_line(exc))
            else:
                ms = round((time.monotonic() - began) * 1e3)
                log.info("stage_stopped", stage=stage.name, ms=ms)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
