"""The Stage protocol every long-running piece follows, and the pipeline that orders them.

A stage is registered once, in its layer (`Pipeline.add`). Layers are started bottom-up
(infrastructure -> sinks -> shared state -> batchers -> receivers) and stopped top-down, so
each stage drains into a consumer that is still alive; within a layer, stages start in the
order they were added. /status and the health probes are derived from the same registration:
a stage with a `status()` method is shown under its name, one with a `probe()` method is
probed (`ingestd.observe.health.Prober`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class HasStatus(Protocol):
    """Optional on a stage (or a batcher's writer): its counters and state for /status."""

    def status(self) -> dict[str, Any]:
        """A JSON-ready dict for people; other modules read typed methods, never these keys."""
        ...


@runtime_checkable
class HasProbe(Protocol):
    """Optional on a stage: the prober asks it, every interval, whether its server answers."""

    name: str

    async def probe(self) -> None:
        """Return when the server answers; raise otherwise."""
        ...


class Layer(enum.IntEnum):
    """Where a stage sits; lower layers start first and stop last."""

    INFRASTRUCTURE = 0  # memory guard, process sampler
    SINKS = 1  # storage sinks and the jobs that run on them
    SHARED_STATE = 2  # Redis, dedup, cluster pressure, config reload, the prober
    BATCHERS = 3
    RECEIVERS = 4


@dataclass(frozen=True, slots=True)
class Probe:
    """One health probe derived from a stage: its component (the stage's name) and whether it
    is required for readiness (an optional one failing degrades the process instead)."""

    component: str
    probe: Callable[[], Awaitable[None]]
    required: bool


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
    """The stages of one process, registered by layer; starts and stops them in order."""

    def __init__(self) -> None:
        self._layers: dict[Layer, list[Stage]] = {layer: [] for layer in Layer}
        self._optional: set[str] = set()
        self._started: list[Stage] = []

    def add(self, layer: Layer, *stages: Stage, required: bool = True) -> None:
        """Register *stages* in *layer*, after those already there.

        *required* matters for stages with a probe: False means that their failing probe
        makes the process degraded instead of unready (Redis is shared state, not storage).
        """
        for stage in stages:
            self._layers[layer].append(stage)
            if not required:
                self._optional.add(stage.name)

    @property
    def stages(self) -> list[Stage]:
        """Every stage in start order."""
        return [stage for layer in Layer for stage in self._layers[layer]]

    def status_sources(self) -> dict[str, Callable[[], dict[str, Any]]]:
        """Each stage's `status` by stage name, in start order, for /status."""
        return {s.name: s.status for s in self.stages if isinstance(s, HasStatus)}

    def probes(self) -> list[Probe]:
        """Each stage's `probe`, in start order, for the prober."""
        return [
            Probe(s.name, s.probe, required=s.name not in self._optional)
            for s in self.stages
            if isinstance(s, HasProbe)
        ]

    async def start(self, tasks: asyncio.TaskGroup, *, timeout_s: float = 60.0) -> None:
        """Start every stage, bottom layer first; on a failure stop what started and raise."""
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
        """Stop started stages, top layer first, each bounded by the shared deadline."""
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
