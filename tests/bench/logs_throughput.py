"""Log records per second into Elasticsearch: raw `_bulk` replay vs ingestd, end to end.

    set -a; . .stack/env; set +a
    .venv/bin/python -m tests.bench.logs_throughput sizes      # bulk size sweep (raw _bulk)
    .venv/bin/python -m tests.bench.logs_throughput e2e        # ingestd over HTTP and direct

Every run converts SDK-shaped requests (512 records, tests/bench/logs_payload.py) into the bulk
items ingestd would write, so the raw replay and ingestd index the same documents. Each phase
writes to its own data stream `logs-bench<phase>.otel-ingestdbench` and deletes what it wrote
afterwards (rollover, then delete the non-write backing indices), so runs leave nothing behind.
Numbers are wall-clock records/s on a shared 2-core machine; run a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from typing import Any

import aiohttp
import uvloop
from elasticsearch import AsyncElasticsearch

from ingestd.config import Config, parse
from ingestd.convert.logs import LogsConverter
from ingestd.daemon import build
from ingestd.ingest import Ingest
from ingestd.model import RequestContext, Signal
from ingestd.pipeline import deadline_in
from ingestd.receiver.decode import request_key
from ingestd.receiver.otlp_http import OtlpHttpReceiver
from ingestd.schema.elasticsearch import apply_templates
from tests.bench.logs_payload import logs_request

ES_URL = os.environ.get("INGESTD_ES_URL", "http://127.0.0.1:9200")
ES_PID_FILE = os.path.join(
    os.environ.get("INGESTD_STACK_DIR", "/var/lib/ingestd-stack"), "es", "elasticsearch.pid"
)
NAMESPACE = "ingestdbench"
MiB = 1024 * 1024


def es_cpu_s() -> float:
    """CPU seconds Elasticsearch has used (its JVM's utime + stime), 0 if not readable."""
    try:
        with open(ES_PID_FILE) as f:
            pid = f.read().strip()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Meter:
    """Wall time, this process's CPU and Elasticsearch's CPU over a phase."""

    def __enter__(self) -> Meter:
        self.wall, self.cpu, self.es = time.perf_counter(), time.process_time(), es_cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.es = es_cpu_s() - self.es

    def line(self, name: str, records: int) -> str:
        return (
            f"{name:18s} {records / self.wall:8.0f} records/s | ingestd CPU "
            f"{self.cpu / records * 1e6:5.1f} us/record | Elasticsearch CPU "
            f"{self.es / records * 1e6:5.1f} us/record"
        )


def requests_for(phase: str, count: int, seed: int) -> list[Any]:
    """*count* distinct 512-record requests routed to this phase's data stream."""
    out = []
    for i in range(count):
        req = logs_request(512, service=f"bench-{phase}", seed=seed * 100_000 + i)
        kv = req.resource_logs[0].resource.attributes.add(key="data_stream.dataset")
        kv.value.string_value = f"bench{phase}"
        out.append(req)
    return out


def bulk_items(requests: list[Any]) -> list[bytes]:
    convert = LogsConverter(namespace=NAMESPACE)
    return [item for r in requests for item in convert(r).payload]


async def cleanup(es: AsyncElasticsearch, phase: str) -> None:
    stream = f"logs-bench{phase}.otel-{NAMESPACE}"
    resolved = await es.indices.resolve_index(name=stream, expand_wildcards="all")
    if not resolved["data_streams"]:
        return
    await es.indices.rollover(alias=stream)
    resolved = await es.indices.resolve_index(name=stream, expand_wildcards="all")
    backing = sorted(resolved["data_streams"][0]["backing_indices"])
    for index in backing[:-1]:
        await es.indices.delete(index=index)


async def raw_bulk(items: list[bytes], bulk_bytes: int, writers: int) -> float:
    """Replay *items* as _bulk requests of ~bulk_bytes with *writers* in parallel; records/s."""
    bodies: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for item in items:
        chunk.append(item)
        size += len(item)
        if size >= bulk_bytes:
            bodies.append(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        bodies.append(b"".join(chunk))
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Content-Type": "application/x-ndjson"}
    url = f"{ES_URL}/_bulk?filter_path=errors,items.*.error.type"

    async def writer(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url, data=body, headers=headers) as resp:
                answer = await resp.json()
                assert resp.status == 200, answer
                assert not answer["errors"], answer

    began = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(writer(session) for _ in range(writers)))
    return len(items) / (time.perf_counter() - began)


async def sizes(args: argparse.Namespace) -> None:
    es = AsyncElasticsearch(ES_URL)
    await apply_templates(_config(8 * MiB).sinks.elasticsearch)
    print(f"raw _bulk, {args.writers} writers, {args.requests} x 512 records per run")
    results: dict[int, list[float]] = {}
    for rep in range(args.repeat):
        for mib in args.mib:
            phase = "sizes"
            items = bulk_items(requests_for(phase, args.requests, seed=rep * 1000 + mib))
            rate = await raw_bulk(items, mib * MiB, args.writers)
            results.setdefault(mib, []).append(rate)
            print(f"  {mib:3d} MiB bulks: {rate:9.0f} records/s")
            await cleanup(es, phase)
    print("best of runs:")
    for mib, rates in results.items():
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(f"  {mib:3d} MiB: {max(rates):9.0f} records/s (runs: {runs})")
    await es.close()


def _config(bulk_bytes: int, writers: int = 2) -> Config:
    return parse(
        f"""
receivers:
  grpc: {{enabled: false}}
  http: {{endpoint: "127.0.0.1:14399"}}
sinks:
  timescale: {{enabled: false}}
  elasticsearch:
    urls: ["{ES_URL}"]
    logs_namespace: {NAMESPACE}
    writers: {writers}
    batch: {{max_bytes: {bulk_bytes}}}
redis: {{enabled: false}}
"""
    )


def _http_client(url: str, bodies: list[bytes], concurrency: int, out: Any) -> None:
    """A load generator in its own process: POST pre-encoded bodies, count acked records."""

    async def run() -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        headers = {"Content-Type": "application/x-protobuf"}

        async def worker(session: aiohttp.ClientSession) -> None:
            while not queue.empty():
                body = queue.get_nowait()
                while True:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.2)

        began = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        out.put(time.perf_counter() - began)

    uvloop.run(run())


async def _export_all(ingest: Ingest, queue: list[tuple[Any, bytes]]) -> None:
    """Take decoded requests off *queue* and export them one at a time, as one client would."""
    while queue:
        req, body = queue.pop()
        key = request_key(Signal.LOGS, "", body)
        await ingest.export(
            Signal.LOGS, req, key=key, ctx=RequestContext("bench"), wire_bytes=len(body)
        )


async def e2e(args: argparse.Namespace) -> None:
    es = AsyncElasticsearch(ES_URL)
    bulk_bytes = args.bulk_mib * MiB
    config = _config(bulk_bytes, args.writers)
    await apply_templates(config.sinks.elasticsearch)
    n = args.requests
    records = n * 512
    print(f"{n} requests x 512 records, bulk {args.bulk_mib} MiB, {args.writers} writers")
    for rep in range(args.repeat):
        # Baseline: the very documents ingestd would write, replayed as raw _bulk.
        items = bulk_items(requests_for("raw", n, seed=10_000 + rep))
        with Meter() as raw:
            await raw_bulk(items, bulk_bytes, args.writers)
        await cleanup(es, "raw")

        daemon = build(config)
        async with asyncio.TaskGroup() as tasks:
            await daemon.pipeline.start(tasks)
            receiver = daemon.stages["receiver.http"]
            assert isinstance(receiver, OtlpHttpReceiver)
            # ingestd direct: decoded requests into Ingest.export (what the gRPC receiver does
            # after decoding), args.concurrency requests in flight.
            direct_reqs = requests_for("direct", n, seed=20_000 + rep)
            bodies = [r.SerializeToString() for r in direct_reqs]
            queue = list(zip(direct_reqs, bodies, strict=True))
            with Meter() as direct:
                await asyncio.gather(
                    *(_export_all(daemon.ingest, queue) for _ in range(args.concurrency))
                )

            # ingestd over OTLP/HTTP from a separate client process (its CPU is not counted).
            http_bodies = [
                r.SerializeToString() for r in requests_for("http", n, seed=30_000 + rep)
            ]
            ctx = multiprocessing.get_context("spawn")
            out = ctx.Queue()
            proc = ctx.Process(
                target=_http_client,
                args=(
                    f"http://127.0.0.1:{receiver.port}/v1/logs",
                    http_bodies,
                    args.concurrency,
                    out,
                ),
            )
            proc.start()
            with Meter() as http:
                await asyncio.to_thread(out.get)
            await asyncio.to_thread(proc.join)
            await daemon.pipeline.stop(deadline_in(10))
        for phase in ("direct", "http"):
            await cleanup(es, phase)
        print(f"  run {rep + 1}:")
        print("    " + raw.line("raw _bulk replay", records))
        print(
            "    "
            + direct.line("ingestd direct", records)
            + f" | ratio {raw.wall / direct.wall:.2f}"
        )
        print(
            "    "
            + http.line("ingestd OTLP/HTTP", records)
            + f" | ratio {raw.wall / http.wall:.2f}"
        )
    await es.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sizes", help="raw _bulk throughput by bulk size")
    s.add_argument("--mib", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    s.add_argument("--requests", type=int, default=120)
    s.add_argument("--writers", type=int, default=2)
    s.add_argument("--repeat", type=int, default=2)
    e = sub.add_parser("e2e", help="ingestd end to end vs raw _bulk of the same documents")
    e.add_argument("--requests", type=int, default=120)
    e.add_argument("--bulk-mib", type=int, default=8)
    e.add_argument("--writers", type=int, default=2)
    e.add_argument("--concurrency", type=int, default=8)
    e.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    uvloop.run(sizes(args) if args.mode == "sizes" else e2e(args))


if __name__ == "__main__":
    main()
