"""The load generator: client processes that export pre-built OTLP requests over gRPC or HTTP.

Each client is its own process (multiprocessing, spawn) with its own connection(s), so the
generator is not one Python process's CPU, and SO_REUSEPORT workers see several connections.
A client builds its templates (tests/bench/payloads.py) before the clock starts and stamps fresh
item ids into a copy of a template's bytes before each send.

Modes:
- max: `inflight` requests outstanding per client, each sent as soon as the previous answered
  (closed loop): the subject's maximum throughput.
- rate: open loop at a fixed offered rate. Request k is due at start + k / rate; it is sent when
  due whatever is still outstanding, and its latency is counted from when it was due, so time
  spent queueing behind a slow subject is part of the latency (no coordinated omission).

Every client reports its acknowledgements as (time, items) and, per request, (due time, latency,
ok), so the caller can count what was acknowledged inside its own measurement window.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing as mp
import queue
import time
from dataclasses import dataclass, field
from typing import Any

GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
HTTP_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
_TIMEOUT_S = 30.0
_FAILURE_PAUSE_S = 0.05


@dataclass(frozen=True)
class RunSpec:
    """What one client does in one run."""

    signal: str
    target: str  # host:port
    transport: str  # grpc | http
    mode: str  # max | rate
    duration_s: float
    inflight: int = 4
    rate: float = 0.0  # items/s of this client (rate mode)
    phase: float = 0.0  # fraction of an interval this client's schedule is shifted by
    dataset: str = ""
    namespace: str = ""
    templates: int = 6


@dataclass
class ClientResult:
    client: int
    ok_requests: int = 0
    failed_requests: int = 0
    ok_items: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    acks: list[tuple[float, int]] = field(default_factory=list)
    # (due time, latency s, ok) per request
    latencies: list[tuple[float, float, bool]] = field(default_factory=list)
    max_outstanding: int = 0
    cpu_s: float = 0.0


class ClientPool:
    """N client processes kept for the whole benchmark (spawned once: imports cost seconds)."""

    def __init__(self, clients: int) -> None:
        ctx = mp.get_context("spawn")
        self._results: Any = ctx.Queue()
        self._commands: list[Any] = [ctx.Queue() for _ in range(clients)]
        self._procs = [
            ctx.Process(
                target=_client_main, args=(i, self._commands[i], self._results), daemon=True
            )
            for i in range(clients)
        ]
        for proc in self._procs:
            proc.start()
        self._expect("up", clients, 120)

    def __len__(self) -> int:
        return len(self._procs)

    def prepare(self, specs: list[RunSpec]) -> None:
        """Hand each client (the first len(specs)) its spec; return once all built templates."""
        if len(specs) > len(self._procs):
            raise ValueError(f"{len(specs)} client specs for a pool of {len(self._procs)}")
        for command, spec in zip(self._commands, specs, strict=False):
            command.put(("prepare", spec))
        self._expect("ready", len(specs), 300)
        self._active = len(specs)

    def go(self, delay_s: float = 0.5) -> float:
        """Start the prepared run *delay_s* from now; return its wall-clock start time."""
        start_at = time.time() + delay_s
        for command in self._commands[: self._active]:
            command.put(("go", start_at))
        return start_at

    def collect(self, timeout_s: float) -> list[ClientResult]:
        """Wait for every active client's result (they finish their requests in flight)."""
        return [r for _, r in self._expect("done", self._active, timeout_s)]

    def close(self) -> None:
        for command in self._commands:
            command.put(("exit", None))
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()

    def _expect(self, kind: str, count: int, timeout_s: float) -> list[tuple[str, Any]]:
        got: list[tuple[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            try:
                message = self._results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"load clients: {len(got)}/{count} said {kind!r}") from None
            if message[0] == "error":
                raise RuntimeError(f"load client failed: {message[1]}")
            if message[0] == kind:
                got.append(message)
        return got


# -- inside a client process ----------------------------------------------------------------------


def _client_main(index: int, commands: Any, results: Any) -> None:
    import uvloop

    from tests.bench import payloads

    results.put(("up", index))
    templates: dict[tuple[str, str, str, int], list[payloads.Template]] = {}
    seq = 0  # never reset: ids stay unique across runs of this benchmark
    while True:
        command, arg = commands.get()
        if command == "exit":
            return
        if command != "prepare":
            continue
        spec: RunSpec = arg
        try:
            key = (spec.signal, spec.dataset, spec.namespace, spec.templates)
            if key not in templates:
                templates[key] = [
                    payloads.build(
                        spec.signal,
                        index * 1000 + t,
                        dataset=spec.dataset,
                        namespace=spec.namespace,
                    )
                    for t in range(spec.templates)
                ]
            results.put(("ready", index))
            command, start_at = commands.get()
            began_cpu = time.process_time()
            result = ClientResult(index)
            runner = _Runner(index, spec, templates[key], seq, result)
            uvloop.run(runner.run(start_at))
            seq = runner.seq
            result.cpu_s = time.process_time() - began_cpu
            results.put(("done", result))
        except Exception as exc:  # the parent must hear about it, not wait forever
            results.put(("error", f"client {index}: {type(exc).__name__}: {exc}"))


class _Runner:
    def __init__(
        self, index: int, spec: RunSpec, templates: list[Any], seq: int, result: ClientResult
    ) -> None:
        self.index = index
        self.spec = spec
        self.templates = templates
        self.seq = seq
        self.result = result
        self.outstanding = 0

    def next_body(self) -> tuple[bytes, int]:
        template = self.templates[self.seq % len(self.templates)]
        body = template.stamp(self.index, self.seq)
        self.seq += 1
        return body, template.items

    async def run(self, start_at: float) -> None:
        send, close = await self._sender()
        try:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            end = start_at + self.spec.duration_s
            if self.spec.mode == "max":
                await asyncio.gather(
                    *(self._closed_loop(send, end) for _ in range(self.spec.inflight))
                )
            else:
                await self._open_loop(send, start_at, end)
        finally:
            await close()

    async def _closed_loop(self, send: Any, end: float) -> None:
        while time.time() < end:
            body, items = self.next_body()
            due = time.time()
            ok = await self._send_one(send, body, items, due)
            if not ok:
                await asyncio.sleep(_FAILURE_PAUSE_S)

    async def _open_loop(self, send: Any, start_at: float, end: float) -> None:
        interval = self.templates[0].items / self.spec.rate
        due = start_at + self.spec.phase * interval
        tasks: set[asyncio.Task[bool]] = set()
        while due < end:
            body, items = self.next_body()  # stamped before it is due: not in the latency
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            task = asyncio.create_task(self._send_one(send, body, items, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += interval
        if tasks:
            await asyncio.wait(tasks)

    async def _send_one(self, send: Any, body: bytes, items: int, due: float) -> bool:
        self.outstanding += 1
        self.result.max_outstanding = max(self.result.max_outstanding, self.outstanding)
        try:
            error = await send(body)
        finally:
            self.outstanding -= 1
        now = time.time()
        ok = error is None
        self.result.latencies.append((due, now - due, ok))
        if ok:
            self.result.ok_requests += 1
            self.result.ok_items += items
            self.result.acks.append((now, items))
        else:
            self.result.failed_requests += 1
            self.result.errors[str(error)] += 1
        return ok

    async def _sender(self) -> tuple[Any, Any]:
        if self.spec.transport == "grpc":
            return await _grpc_sender(self.spec)
        return await _http_sender(self.spec)


async def _grpc_sender(spec: RunSpec) -> tuple[Any, Any]:
    import grpc

    channel = grpc.aio.insecure_channel(
        spec.target,
        options=[("grpc.max_send_message_length", 64 << 20), ("grpc.enable_retries", 0)],
    )
    export = channel.unary_unary(
        GRPC_METHODS[spec.signal], request_serializer=None, response_deserializer=None
    )

    async def send(body: bytes) -> str | None:
        try:
            await export(body, timeout=_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return None

    async def close() -> None:
        await channel.close()

    return send, close


async def _http_sender(spec: RunSpec) -> tuple[Any, Any]:
    import aiohttp

    url = f"http://{spec.target}{HTTP_PATHS[spec.signal]}"
    connector = aiohttp.TCPConnector(limit=max(spec.inflight, 64))
    session = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S)
    )
    headers = {"Content-Type": "application/x-protobuf"}

    async def send(body: bytes) -> str | None:
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return None if resp.status == 200 else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    async def close() -> None:
        await session.close()

    return send, close


# -- reading the results ------------------------------------------------------------------------


def acked_items(results: list[ClientResult], t0: float, t1: float) -> int:
    """Items acknowledged between wall-clock times t0 and t1."""
    return sum(n for r in results for at, n in r.acks if t0 <= at < t1)


def answered_requests(results: list[ClientResult], t0: float, t1: float) -> int:
    """Requests answered (ok or failed) between wall-clock times t0 and t1."""
    return sum(1 for r in results for due, lat, _ in r.latencies if t0 <= due + lat < t1)


def latency_percentiles(
    results: list[ClientResult], t0: float, t1: float
) -> dict[str, float | int]:
    """p50/p99/p99.9 (ms) of requests due in [t0, t1); failed requests count as their time."""
    values = sorted(lat for r in results for due, lat, _ in r.latencies if t0 <= due < t1)
    failed = sum(1 for r in results for due, _, ok in r.latencies if t0 <= due < t1 and not ok)
    if not values:
        return {"requests": 0, "failed": failed}
    return {
        "requests": len(values),
        "failed": failed,
        "p50_ms": _pct(values, 0.50) * 1e3,
        "p99_ms": _pct(values, 0.99) * 1e3,
        "p999_ms": _pct(values, 0.999) * 1e3,
        "max_ms": values[-1] * 1e3,
    }


def _pct(values: list[float], q: float) -> float:
    # Nearest rank: the smallest value with at least q of the samples at or below it.
    rank = max(0, min(len(values) - 1, int(-(-q * len(values) // 1)) - 1))
    return values[rank]
