"""The per-component health board behind /readyz and /status, and the prober that fills it.

Stages report their own state; the prober also asks each sink and Redis, every few seconds,
whether it answers. /readyz is 200 only when every required component is ok or degraded.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from ingestd.observe.metrics import COMPONENT_DEGRADED, COMPONENT_UP
from ingestd.pipeline import Probe

log = structlog.get_logger("ingestd.observe.health")


class State(enum.StrEnum):
    STARTING = "starting"
    OK = "ok"
    # Working with a reduced guarantee (Redis down: no dedup). Still ready.
    DEGRADED = "degraded"
    # Cannot do its job (a sink unreachable). Not ready.
    UNAVAILABLE = "unavailable"
    STOPPING = "stopping"
    STOPPED = "stopped"


_READY_STATES = frozenset({State.OK, State.DEGRADED})


@dataclass
class ComponentHealth:
    state: State = State.STARTING
    detail: str = ""
    since: float = field(default_factory=time.time)
    # Whether this component must be OK/DEGRADED for the process to be ready.
    required: bool = True


class Health:
    """The state of each component, as the stages report it. Cheap to read and to write."""

    def __init__(self) -> None:
        self._components: dict[str, ComponentHealth] = {}
        self.draining = False
        self.started = False

    def register(self, name: str, *, required: bool = True) -> None:
        current = self._components.setdefault(name, ComponentHealth(required=required))
        _export(name, current.state)

    def set(self, name: str, state: State, detail: str = "") -> None:
        current = self._components.get(name)
        if current is None:
            current = self._components[name] = ComponentHealth()
        elif current.state == state and current.detail == detail:
            # Nothing changed, and the gauges were written when it last did: the memory guard
            # and the prober confirm "ok" several times a second on an idle process.
            return
        if current.state != state:
            log.info("component_state", component=name, state=str(state), detail=detail)
        current.state, current.detail, current.since = state, detail, time.time()
        _export(name, state)

    def get(self, name: str) -> ComponentHealth:
        return self._components[name]

    @property
    def ready(self) -> bool:
        return (
            self.started
            and not self.draining
            and all(c.state in _READY_STATES for c in self._components.values() if c.required)
        )

    @property
    def degraded(self) -> bool:
        return any(c.state is State.DEGRADED for c in self._components.values())

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "draining": self.draining,
            "degraded": self.degraded,
            "components": {
                name: {
                    "state": str(c.state),
                    "detail": c.detail,
                    "since": c.since,
                    "required": c.required,
                }
                for name, c in sorted(self._components.items())
            },
        }


def _export(name: str, state: State) -> None:
    COMPONENT_UP.labels(component=name).set(1 if state in _READY_STATES else 0)
    COMPONENT_DEGRADED.labels(component=name).set(1 if state is State.DEGRADED else 0)


class Prober:
    """A stage that asks each registered probe whether its server answers, every interval.

    A probe is an async callable that returns when the server answers and raises otherwise.
    Each probe is bounded by the interval, so one hung server cannot stall the others.
    """

    name = "prober"

    def __init__(self, health: Health, interval_s: float, probes: Iterable[Probe]) -> None:
        """Register each probe's component in *health*; a failing probe sets it UNAVAILABLE,
        or DEGRADED when the component is not required."""
        self._health = health
        self._interval_s = interval_s
        self._probes: dict[str, tuple[Callable[[], Awaitable[None]], State]] = {}
        for entry in probes:
            health.register(entry.component, required=entry.required)
            failing = State.UNAVAILABLE if entry.required else State.DEGRADED
            self._probes[entry.component] = (entry.probe, failing)
        self._task: asyncio.Task[None] | None = None
        self._failing: set[str] = set()

    async def start(self, tasks: asyncio.TaskGroup) -> None:
        await self.run_once()
        self._task = tasks.create_task(self._loop(), name="prober")

    async def stop(self, deadline: float) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def run_once(self) -> None:
        await asyncio.gather(*(self._check(name, *entry) for name, entry in self._probes.items()))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.run_once()

    async def _check(
        self, name: str, probe: Callable[[], Awaitable[None]], when_failing: State
    ) -> None:
        try:
            async with asyncio.timeout(self._interval_s):
                await probe()
        except Exception as exc:  # noqa: BLE001 - any failure of a probe means "not answering"
            self._failing.add(name)
            self._health.set(name, when_failing, f"{type(exc).__name__}: {exc}"[:300])
            return
        # Lift only what the prober itself set (or the initial STARTING): a component may hold
        # itself DEGRADED for its own reasons (Redis with its breaker open) while it answers.
        if name in self._failing or self._health.get(name).state is State.STARTING:
            self._failing.discard(name)
            self._health.set(name, State.OK)
