"""What one log document costs Elasticsearch: raw `_bulk` replays of ingestd's documents and of
the OpenTelemetry Collector's documents for the same records, under mapping variants.

    set -a; . .stack/env; set +a
    .venv/bin/python -m tests.bench.es_cost capture            # both document sets, same records
    .venv/bin/python -m tests.bench.es_cost replay ours collector --repeat 3
    .venv/bin/python -m tests.bench.es_cost replay ours --template before --template current
    .venv/bin/python -m tests.bench.es_cost disk ours --template before --template current

`capture` stamps SDK-shaped requests (tests/bench/payloads.py), converts them with ingestd's
converter, and sends the same bodies over OTLP/HTTP to the Collector (the bench's peer build),
whose Elasticsearch exporter (otel mode) writes through a recording proxy: both NDJSON sets land
in .bench/escost/. `replay` posts a set as `_bulk` bodies (8 MiB, 2 writers, as ingestd's
writer) into a fresh backing index of `logs-escost<tag>.otel-escost`, under an index template
of its own (priority 500, so the shared `ingestd-logs` templates are never touched), and prints
docs/s and Elasticsearch's own CPU (its JVM's utime + stime) per 1,000 documents, counted until
its merges settle, less its idle rate just before (other sessions share it). Document sets:
`ours` (create + deterministic `_id`), `ours-noid` (the same without `_id`), `ours-timeid` (the
hash behind a time prefix, as Elasticsearch's own ids), `collector`. Each pass over a set gives
ours new `_id`s, so every document is new. Templates: `current` (this checkout's
schema/elasticsearch/), `before` (the mapping before 2026-12-05), and variants joined by `+`
(`diag_*` ones leave a group of fields unindexed, to see what it costs). `disk` prints what the
mapping writes per document (`_disk_usage` after a merge to one segment).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from aiohttp import web

from ingestd.config import LogsTemplateConfig
from ingestd.convert.logs import LogsConverter
from ingestd.model import Signal
from ingestd.receiver.decode import parse_protobuf
from ingestd.schema import elasticsearch as es_schema
from tests.bench import payloads
from tests.bench.logs_throughput import es_cpu_s

ES_URL = os.environ.get("INGESTD_ES_URL", "http://127.0.0.1:9200")
OUT = Path(".bench/escost")
NAMESPACE = "escost"
DATASET = "escost"
MiB = 1024 * 1024
_NDJSON = {"Content-Type": "application/x-ndjson"}


# -- capture --------------------------------------------------------------------------------------


def _bodies(requests: int) -> list[bytes]:
    templates = [
        payloads.build("logs", 700_000 + t, dataset=DATASET, namespace=NAMESPACE) for t in range(4)
    ]
    return [templates[seq % 4].stamp(7, seq) for seq in range(requests)]


async def _proxy(
    recorded: list[bytes], want: int, done: asyncio.Event
) -> tuple[web.AppRunner, int]:
    """An HTTP proxy to Elasticsearch that keeps the body of every `_bulk` it forwards and sets
    *done* once they hold *want* documents."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.endswith("/_bulk"):
            recorded.append(body)
            if _count_docs(recorded) >= want:
                done.set()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        async with session.request(
            request.method, ES_URL + request.path_qs, data=body, headers=headers
        ) as upstream:
            data = await upstream.read()
            out = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=upstream.status, body=data, headers=out)

    app = web.Application(client_max_size=256 * MiB)
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_cleanup.append(lambda _: session.close())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def capture(args: argparse.Namespace) -> None:
    from tests.bench import peers
    from tests.bench.sections import collector_config
    from tests.bench.subjects import Collector
    from tests.harness import free_port

    bodies = _bodies(args.requests)
    await asyncio.to_thread(_write_ours, bodies)
    want = args.requests * payloads.ITEMS_PER_REQUEST
    recorded: list[bytes] = []
    done = asyncio.Event()
    runner, proxy_port = await _proxy(recorded, want, done)
    peer = peers.otelcol(build=False)
    grpc_port, http_port = free_port(), free_port()
    config = collector_config(f"http://127.0.0.1:{proxy_port}", grpc_port, http_port)
    # A short flush, so that the capture ends soon after the last request.
    config["exporters"]["elasticsearch"]["sending_queue"] = {"batch": {"flush_timeout": "1s"}}
    collector = Collector(peer.binary, config, OUT / "otelcol", grpc_port, http_port)
    try:
        async with aiohttp.ClientSession() as session:
            for body in bodies:
                async with session.post(
                    f"http://127.0.0.1:{http_port}/v1/logs",
                    data=body,
                    headers={"Content-Type": "application/x-protobuf"},
                ) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=60)
    finally:
        collector.stop()
        await runner.cleanup()
    await asyncio.to_thread(_write_collector, recorded)
    print(f"ours: {want} docs; collector: {_count_docs(recorded)} docs in {len(recorded)} bulks")
    print(f"written to {OUT}/ours.ndjson, {OUT}/collector.ndjson")


def _write_ours(bodies: list[bytes]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    convert = LogsConverter(namespace=NAMESPACE)
    with (OUT / "ours.ndjson").open("wb") as f:
        for body in bodies:
            for item in convert(parse_protobuf(Signal.LOGS, body)).payload:
                f.write(item)


def _write_collector(recorded: list[bytes]) -> None:
    with (OUT / "collector.ndjson").open("wb") as f:
        for body in recorded:
            f.write(body if body.endswith(b"\n") else body + b"\n")


def _count_docs(bodies: list[bytes]) -> int:
    return sum(b.count(b"\n") + (not b.endswith(b"\n")) for b in bodies) // 2


# -- template variants ----------------------------------------------------------------------------

Variant = Callable[[dict[str, Any], dict[str, Any]], None]


def _noop(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    return None


# "current" is the mapping as shipped in this checkout (schema/elasticsearch/).
VARIANTS: dict[str, Variant] = {"current": _noop}


def variant(name: str) -> Callable[[Variant], Variant]:
    def register(fn: Variant) -> Variant:
        VARIANTS[name] = fn
        return fn

    return register


def _props(mappings: dict[str, Any], *path: str) -> dict[str, Any]:
    node = mappings
    for name in path:
        node = node["properties"][name]
    return node


@variant("before")
def _before(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    """The mapping before 2026-12-05 (norms, doc values on ids, observed time indexed)."""
    _props(mappings, "body", "text").pop("norms", None)
    _props(mappings, "observed_timestamp").pop("index", None)
    for name in ("trace_id", "span_id"):
        _props(mappings, name).pop("doc_values", None)


@variant("nodv_ids")
def _nodv_ids(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    for name in ("trace_id", "span_id"):
        _props(mappings, name)["doc_values"] = False


@variant("norms_off")
def _norms_off(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    _props(mappings, "body", "text")["norms"] = False


@variant("observed_noindex")
def _observed_noindex(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    _props(mappings, "observed_timestamp")["index"] = False


@variant("resource_flattened")
def _resource_flattened(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    _props(mappings, "resource", "attributes").clear()
    _props(mappings, "resource", "attributes").update({"type": "flattened"})


@variant("refresh30")
def _refresh30(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    settings["index"]["refresh_interval"] = "30s"


@variant("no_malformed")
def _no_malformed(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    settings["index"]["mapping"]["ignore_malformed"] = False


@variant("translog_big")
def _translog_big(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    settings["index"]["translog"] = {"flush_threshold_size": "1gb"}


@variant("lean")
def _lean(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    _nodv_ids(settings, mappings)
    _norms_off(settings, mappings)
    _observed_noindex(settings, mappings)


# Diagnostics, not candidates: what one group of fields costs, by not indexing it at all.
@variant("diag_no_resource")
def _diag_no_resource(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    _props(mappings, "resource")["properties"]["attributes"] = {"type": "object", "enabled": False}


@variant("diag_no_attributes")
def _diag_no_attributes(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    mappings["properties"]["attributes"] = {"type": "object", "enabled": False}


@variant("diag_no_body")
def _diag_no_body(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    _props(mappings, "body", "text")["index"] = False


@variant("diag_no_ids")
def _diag_no_ids(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    for name in ("trace_id", "span_id"):
        _props(mappings, name).update({"index": False, "doc_values": False})


@variant("merge_wide")
def _merge_wide(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    settings["index"]["merge"] = {"policy": {"segments_per_tier": 20, "floor_segment": "8mb"}}


@variant("ds_dv_only")
def _ds_dv_only(settings: dict[str, Any], mappings: dict[str, Any]) -> None:
    for name in ("type", "dataset", "namespace"):
        _props(mappings, "data_stream", name)["index"] = False


def template_for(names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    settings = es_schema.settings(LogsTemplateConfig())
    mappings = es_schema.mappings()
    for name in names:
        for part in name.split("+"):
            VARIANTS[part](settings, mappings)
    return settings, mappings


# -- replay ---------------------------------------------------------------------------------------


def _load(kind: str) -> list[tuple[bytes, bytes]]:
    """(action line, document line) pairs of a captured set."""
    path = OUT / ("collector.ndjson" if kind == "collector" else "ours.ndjson")
    lines = path.read_bytes().splitlines(keepends=True)
    pairs = list(zip(lines[0::2], lines[1::2], strict=True))
    out = []
    for action, doc in pairs:
        parsed = orjson.loads(action)
        op = next(iter(parsed))
        meta = parsed[op]
        if kind == "ours-noid":
            meta.pop("_id", None)
        elif kind == "ours-timeid":
            meta["_id"] = _time_prefixed(meta["_id"], doc)
        out.append((orjson.dumps({op: meta}) + b"\n", doc))
    return out


def _time_prefixed(doc_id: str, doc: bytes) -> str:
    """The same 128 bits of hash behind 48 bits of the record's time in ms (big-endian): an id
    whose prefix grows with time, as Elasticsearch's own ids do (not what ingestd writes)."""
    stamp = orjson.loads(doc)["@timestamp"]
    ms = int(datetime.fromisoformat(stamp[:23] + "+00:00").timestamp() * 1000)
    raw = base64.urlsafe_b64decode(doc_id + "=" * (-len(doc_id) % 4))
    return base64.urlsafe_b64encode(ms.to_bytes(6, "big") + raw[:12]).rstrip(b"=").decode()


def _bodies_for(
    pairs: list[tuple[bytes, bytes]], stream: str, docs: int, bulk_bytes: int
) -> list[bytes]:
    """Bulk bodies of *docs* documents into *stream*; `_id`s get a pass suffix after one pass."""
    bodies, parts, size = [], [], 0
    for n in range(docs):
        action, doc = pairs[n % len(pairs)]
        action = _retarget(action, stream, n // len(pairs))
        parts += (action, doc)
        size += len(action) + len(doc)
        if size >= bulk_bytes:
            bodies.append(b"".join(parts))
            parts, size = [], 0
    if parts:
        bodies.append(b"".join(parts))
    return bodies


def _retarget(action: bytes, stream: str, passes: int) -> bytes:
    parsed = orjson.loads(action)
    op = next(iter(parsed))
    meta = parsed[op]
    meta["_index"] = stream
    if passes and "_id" in meta:
        meta["_id"] = f"{meta['_id']}-{passes}"
    return orjson.dumps({op: meta}) + b"\n"


async def _es(session: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else orjson.dumps(body)
    async with session.request(
        method, ES_URL + path, data=data, headers={"Content-Type": "application/json"}
    ) as resp:
        answer = await resp.json(content_type=None)
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {answer}")
        return answer


async def _fresh_stream(session: aiohttp.ClientSession, tag: str, template: list[str]) -> str:
    """A data stream of our own with an index template of our own, on a new backing index."""
    stream = f"logs-escost{tag}.otel-{NAMESPACE}"
    settings, mappings = template_for(template)
    await _es(
        session,
        "PUT",
        f"/_index_template/escost-{tag}",
        {
            "index_patterns": [stream],
            "priority": 500,
            "data_stream": {},
            "template": {"settings": settings, "mappings": mappings},
        },
    )
    await _empty(session, stream)
    return stream


async def _empty(session: aiohttp.ClientSession, stream: str) -> None:
    resolved = await _es(session, "GET", f"/_resolve/index/{stream}*?expand_wildcards=all")
    if not resolved["data_streams"]:
        return
    await _es(session, "POST", f"/{stream}/_rollover")
    resolved = await _es(session, "GET", f"/_resolve/index/{stream}*?expand_wildcards=all")
    for index in sorted(resolved["data_streams"][0]["backing_indices"])[:-1]:
        # Another session's retention test may have deleted it already.
        await _es(session, "DELETE", f"/{index}?ignore_unavailable=true")


async def _settle(session: aiohttp.ClientSession, stream: str) -> None:
    """Wait until the stream's merges are done (at most 20 s), so their CPU is counted."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = await _es(session, "GET", f"/{stream}/_stats/merge")
        if not stats["_all"]["total"]["merges"]["current"]:
            return
        await asyncio.sleep(0.25)


async def _post_all(session: aiohttp.ClientSession, bodies: list[bytes], writers: int) -> int:
    queue = list(reversed(bodies))
    url = f"{ES_URL}/_bulk?require_data_stream=true&filter_path=errors,items.*.error"
    failed = 0

    async def writer() -> None:
        nonlocal failed
        while queue:
            body = queue.pop()
            async with session.post(url, data=body, headers=_NDJSON) as resp:
                answer = await resp.json(content_type=None)
                if resp.status != 200:
                    raise RuntimeError(f"_bulk: {resp.status} {str(answer)[:300]}")
                if answer.get("errors"):
                    failed += sum(1 for i in answer["items"] if "error" in next(iter(i.values())))

    await asyncio.gather(*(writer() for _ in range(writers)))
    return failed


async def _one_run(
    session: aiohttp.ClientSession,
    kind: str,
    template: list[str],
    tag: str,
    args: argparse.Namespace,
) -> dict[str, float]:
    stream = await _fresh_stream(session, tag, template)
    bodies = _bodies_for(_load(kind), stream, args.docs, args.bulk_mib * MiB)
    # Elasticsearch's idle rate just before (other sessions share it), subtracted below.
    idle0, t0 = es_cpu_s(), time.perf_counter()
    await asyncio.sleep(2.0)
    idle_rate = (es_cpu_s() - idle0) / (time.perf_counter() - t0)
    cpu0, began = es_cpu_s(), time.perf_counter()
    failed = await _post_all(session, bodies, args.writers)
    wall = time.perf_counter() - began
    await _es(session, "POST", f"/{stream}/_refresh")
    await _settle(session, stream)
    total = time.perf_counter() - began
    cpu = es_cpu_s() - cpu0
    stats = await _es(session, "GET", f"/{stream}/_stats/indexing,merge,refresh,flush")
    own = stats["_all"]["primaries"]
    # The index's own time in Elasticsearch (wall time of its indexing, merges, refreshes and
    # flushes): other sessions' requests are not in it, CPU contention is.
    own_ms = sum(
        own[k][f]
        for k, f in (
            ("indexing", "index_time_in_millis"),
            ("merges", "total_time_in_millis"),
            ("refresh", "total_time_in_millis"),
            ("flush", "total_time_in_millis"),
        )
    )
    await _empty(session, stream)
    return {
        "docs_s": args.docs / wall,
        "es_ms_per_1k": cpu / args.docs * 1e6,
        "es_net_ms_per_1k": max(0.0, cpu - idle_rate * total) / args.docs * 1e6,
        "index_ms_per_1k": own_ms / args.docs * 1e3,
        "failed": failed,
    }


async def replay(args: argparse.Namespace) -> None:
    templates = args.template or ["current"]
    print(
        f"raw _bulk replay: {args.docs} docs per run, {args.bulk_mib} MiB bulks, "
        f"{args.writers} writers; ES CPU counted until merges settle"
    )
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    async with aiohttp.ClientSession() as session:
        for rep in range(args.repeat):
            for kind in args.kinds:
                for i, template in enumerate(templates):
                    tag = f"{kind.replace('-', '')}{i}"
                    run = await _one_run(session, kind, [template], tag, args)
                    results.setdefault((kind, template), []).append(run)
                    print(f"  run {rep + 1} {kind:10s} {template:28s} " + _fmt(run), flush=True)
    print("median of runs:")
    for (kind, template), runs in results.items():
        median = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
        print(f"  {kind:10s} {template:28s} " + _fmt(median))


async def disk(args: argparse.Namespace) -> None:
    """Index one set under each template, merge to one segment, and print Elasticsearch's
    `_disk_usage` per part: what the mapping makes it write per document."""
    templates = args.template or ["current"]
    async with aiohttp.ClientSession() as session:
        for i, template in enumerate(templates):
            stream = await _fresh_stream(session, f"disk{i}", [template])
            bodies = _bodies_for(_load(args.kind), stream, args.docs, 8 * MiB)
            await _post_all(session, bodies, 2)
            await _es(session, "POST", f"/{stream}/_forcemerge?max_num_segments=1")
            usage = await _es(
                session, "POST", f"/{stream}/_disk_usage?run_expensive_tasks=true&flush=true"
            )
            await _empty(session, stream)
            parts: dict[str, int] = {}
            for index in usage.values():
                if not isinstance(index, dict) or "fields" not in index:
                    continue
                for field in index["fields"].values():
                    inverted = field["inverted_index"]["total_in_bytes"]
                    parts["inverted_index"] = parts.get("inverted_index", 0) + inverted
                    for part in ("stored_fields", "doc_values", "points", "norms"):
                        parts[part] = parts.get(part, 0) + field[f"{part}_in_bytes"]
            total = sum(parts.values())
            line = ", ".join(f"{k} {v / args.docs:5.1f}" for k, v in sorted(parts.items()))
            print(f"{args.kind:10s} {template:28s} {total / args.docs:6.1f} B/doc ({line})")


def _fmt(run: dict[str, float]) -> str:
    return (
        f"{run['docs_s']:8.0f} docs/s | ES CPU {run['es_ms_per_1k']:6.1f} ms/1k docs "
        f"(net of idle {run['es_net_ms_per_1k']:6.1f}) "
        f"| index's own time {run['index_ms_per_1k']:6.1f} ms/1k"
        + (f" | {run['failed']:.0f} FAILED" if run["failed"] else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("capture", help="write ours.ndjson and collector.ndjson")
    c.add_argument("--requests", type=int, default=120)
    r = sub.add_parser("replay", help="raw _bulk replay of captured documents")
    r.add_argument("kinds", nargs="+", choices=["ours", "ours-noid", "ours-timeid", "collector"])
    r.add_argument(
        "--template",
        action="append",
        help=f"variants joined by '+', from: {', '.join(VARIANTS)} (repeatable)",
    )
    r.add_argument("--docs", type=int, default=61_440)
    r.add_argument("--bulk-mib", type=int, default=8)
    r.add_argument("--writers", type=int, default=2)
    r.add_argument("--repeat", type=int, default=2)
    d = sub.add_parser("disk", help="bytes per document by part, under each template")
    d.add_argument("kind", choices=["ours", "ours-noid", "ours-timeid", "collector"])
    d.add_argument("--template", action="append", help="as for replay")
    d.add_argument("--docs", type=int, default=61_440)
    args = parser.parse_args()
    mode = {"capture": capture, "replay": replay, "disk": disk}[args.mode]
    uvloop.run(mode(args))


if __name__ == "__main__":
    main()
