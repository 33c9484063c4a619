"""SDK-shaped OTLP export requests for the benchmark, serialized once, stamped with unique ids.

A `Template` is one serialized request plus the byte offsets of an 8-byte field per item. Before
each send the load generator copies the bytes and writes a fresh id into every offset (a memcpy
and 512 small writes, ~0.2 ms; no protobuf work), so every item of every request is unique: the
stored count is exact (PostgreSQL rows, Elasticsearch `_id`s derived from content) and no two
requests share a dedup key.

- traces: 512 spans in 32 traces of 16 (a server root, client and internal children), 7-17
  attributes each (HTTP / DB semantic conventions, a few high-cardinality values, one value new
  on every send: a request id, a statement literal, a cache key), an exception event on 1 span
  in 8 and a log event on 1 in 16, a link on 1 in 32. Unique id: `span_id` (children's
  `parent_span_id` follow their parent's new id).
- metrics: 512 points of every kind: int and double sums (cumulative monotonic, delta), int and
  double gauges, explicit-bucket histograms (with exemplars on some), exponential histograms and
  summaries; 3-5 attributes per point. Unique id: the point's `time_unix_nano` (a nanosecond
  offset from a base 18-37 minutes ago).
- logs: 512 records with a body of 8-24 words, severity, trace context and 8 attributes (a
  request id new on every send). Unique id: the record's `span_id`.
"""

from __future__ import annotations

import random
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.bench.logs_payload import WORDS
from tests.samples import set_attributes

ITEMS_PER_REQUEST = 512
# Metric times are base + unique id (ns), the id below 2**40 ns (18 minutes). The base is a
# multiple of 2**40 ns 18-37 minutes back, the same in every client built in the same window, so
# ids from different templates and clients never meet.
_METRIC_ID_SPAN_NS = 1 << 40

_ROUTES = ["/api/orders/{id}", "/api/items/{id}", "/api/cart", "/api/users/{id}", "/healthz"]


@dataclass(frozen=True)
class Template:
    """One serialized request and where each item's 8-byte id sits in it."""

    signal: str
    body: bytes
    items: int
    # Per item, the offsets that receive its id (a span's id and its children's parent ids).
    offsets: list[list[int]]
    # ">" (big-endian ids: span ids) or "<" (fixed64 little-endian: metric times).
    byteorder: str
    base: int = 0
    # Per item, where a 16-character hex attribute value sits that is new on every send (a
    # request id, a literal in a statement): production attributes are not all repeats, and
    # ingestd caches attribute encodings, so the benchmark must not flatter that cache.
    hex_offsets: list[int] = field(default_factory=list)

    def stamp(self, client: int, seq: int) -> bytes:
        """A copy of the body with item ids unique for (client, seq, item index)."""
        buf = bytearray(self.body)
        fmt = self.byteorder + "Q"
        pack = struct.pack_into
        if self.byteorder == ">":
            prefix = ((client + 1) << 56) | (seq << 16)
            for i, places in enumerate(self.offsets):
                for offset in places:
                    pack(fmt, buf, offset, prefix | i)
        else:
            prefix = self.base + (((client + 1) << 34) | (seq << 10))
            for i, places in enumerate(self.offsets):
                pack(fmt, buf, places[0], prefix + i)
        token = (((client + 1) << 56) | (seq << 16)) ^ 0x5DEECE66D
        for i, offset in enumerate(self.hex_offsets):
            buf[offset : offset + 16] = b"%016x" % (token | i)
        return bytes(buf)


def build(signal: str, seed: int, *, dataset: str = "", namespace: str = "") -> Template:
    """A template for *signal* ("traces", "metrics", "logs"); *seed* varies its content."""
    if signal == "traces":
        return _traces(seed)
    if signal == "metrics":
        return _metrics(seed)
    return _logs(seed, dataset, namespace)


def _resource(seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "service.name": f"checkout-{seed % 4}",
        "service.namespace": "shop",
        "service.version": "1.4.2",
        "service.instance.id": f"{seed:08x}-7d9f-4c1e-9a1b-2f4c6d8e0a1b",
        "deployment.environment": "production",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.27.0",
        "host.name": f"node-{seed % 16:02d}",
        "host.arch": "amd64",
        "os.type": "linux",
        "process.pid": 4000 + seed % 1000,
        "process.runtime.name": "cpython",
        **(extra or {}),
    }


# Placeholders of the per-send values: 16 letters from g-z, which no hex text, number or word of
# the payload spells; every send overwrites them with 16 hex digits.
_PLACEHOLDER = re.compile(rb"[g-z]{16}")


def _hex(rng: random.Random) -> str:
    return "".join(rng.choice("ghijklmnopqrstuvwxyz") for _ in range(16))


def _hex_offsets(body: bytes, items: int) -> list[int]:
    """Offsets of the items' placeholders, in item order (one per item)."""
    found = [m.start() for m in _PLACEHOLDER.finditer(body)]
    if len(found) != items:
        raise RuntimeError(f"{len(found)} per-send placeholders for {items} items")
    return found


def _unique_ids(rng: random.Random, n: int) -> list[bytes]:
    seen: set[bytes] = set()
    while len(seen) < n:
        seen.add(rng.randbytes(8))
    return list(seen)


# -- traces ---------------------------------------------------------------------------------------


def _span_attributes(rng: random.Random, kind: int, route: str, n: int) -> dict[str, Any]:
    if kind == Span.SPAN_KIND_CLIENT:
        return {
            "db.system": "postgresql",
            "db.name": "shop",
            "db.operation": rng.choice(["SELECT", "INSERT", "UPDATE"]),
            "db.statement": f"SELECT * FROM orders WHERE id = '{_hex(rng)}'",
            "server.address": "db-primary.internal",
            "server.port": 5432,
            "network.peer.address": f"10.0.{n % 8}.{n % 250}",
            "db.rows_affected": rng.randint(0, 50),
            "thread.id": rng.randint(1, 64),
            "code.function": "fetch_order",
        }
    if kind == Span.SPAN_KIND_INTERNAL:
        return {
            "code.function": rng.choice(["render", "validate", "price"]),
            "app.cache.key": f"order:{_hex(rng)}",
            "code.namespace": "shop.checkout",
            "code.lineno": rng.randint(1, 900),
            "thread.id": rng.randint(1, 64),
            "app.cache.hit": rng.random() < 0.8,
            "app.items": rng.randint(1, 20),
        }
    return {
        "http.request.method": rng.choice(["GET", "GET", "GET", "POST", "PUT"]),
        "http.route": route,
        "url.path": route.replace("{id}", str(rng.randint(1, 10**6))),
        "url.scheme": "https",
        "url.query": f"page={rng.randint(1, 20)}",
        "http.response.status_code": rng.choice([200, 200, 200, 201, 404, 500]),
        "server.address": "shop.example.com",
        "server.port": 443,
        "client.address": f"203.0.113.{rng.randint(1, 254)}",
        "network.protocol.version": "1.1",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
        "http.request.body.size": rng.randint(0, 4096),
        "http.response.body.size": rng.randint(100, 65536),
        "enduser.id": f"user-{rng.randint(1, 10**5)}",
        "app.request.id": _hex(rng),
        "app.tenant": rng.choice(["acme", "globex", "initech"]),
        "app.duration.ratio": rng.random(),
    }


def _flask_scope(resources: Any, scopes: str, seed: int) -> Any:
    """Adds a resource (attributes from `seed`) with one Flask instrumentation scope to
    `resources`; returns that scope, whose list is the attribute `scopes`."""
    resource = resources.add()
    set_attributes(resource.resource.attributes, _resource(seed))
    scope = getattr(resource, scopes).add()
    scope.scope.name = "opentelemetry.instrumentation.flask"
    scope.scope.version = "0.48b0"
    return scope


def _traces(seed: int) -> Template:
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    ss = _flask_scope(request.resource_spans, "scope_spans", seed)
    ids = _unique_ids(rng, ITEMS_PER_REQUEST)
    base = time.time_ns() - 60_000_000_000
    kinds = [Span.SPAN_KIND_SERVER] + [Span.SPAN_KIND_CLIENT] * 7 + [Span.SPAN_KIND_INTERNAL] * 8
    trace_id = b""
    root = b""
    for i in range(ITEMS_PER_REQUEST):
        span = ss.spans.add()
        position = i % 16
        if position == 0:
            trace_id = rng.randbytes(16)
            root = ids[i]
        kind = kinds[position]
        route = _ROUTES[(i // 16) % len(_ROUTES)]
        span.trace_id = trace_id
        span.span_id = ids[i]
        if position:
            span.parent_span_id = root
        span.kind = kind
        span.name = (
            f"GET {route}"
            if kind == Span.SPAN_KIND_SERVER
            else ("SELECT shop.orders" if kind == Span.SPAN_KIND_CLIENT else "render")
        )
        start = base + i * 50_000 + rng.randint(0, 1000)
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + rng.randint(20_000, 40_000_000)
        span.flags = 0x100 | 0x01
        span.trace_state = "vendor=abc" if position == 0 and i % 64 == 0 else ""
        set_attributes(span.attributes, _span_attributes(rng, kind, route, i))
        if i % 10 == 9:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = "upstream timed out"
        elif kind == Span.SPAN_KIND_SERVER:
            span.status.code = Status.STATUS_CODE_OK
        if i % 8 == 3:
            event = span.events.add()
            event.time_unix_nano = start + 10_000
            event.name = "exception"
            set_attributes(
                event.attributes,
                {
                    "exception.type": "TimeoutError",
                    "exception.message": "timed out after 5.0 s",
                    "exception.stacktrace": 'Traceback: File "app.py", line 42, in fetch',
                },
            )
        if i % 16 == 5:
            event = span.events.add()
            event.time_unix_nano = start + 5_000
            event.name = "cache.lookup"
            set_attributes(event.attributes, {"cache.key": f"order:{i}", "cache.hit": False})
        if i % 32 == 7:
            link = span.links.add()
            link.trace_id = rng.randbytes(16)
            link.span_id = rng.randbytes(8)
            set_attributes(link.attributes, {"messaging.operation": "process"})
    body = request.SerializeToString()
    offsets = [_find_all(body, b"\x12\x08" + sid, 2) for sid in ids]
    for i, places in enumerate(offsets):
        if len(places) != 1:
            raise RuntimeError(f"span id {i} found {len(places)} times in the template")
        if i % 16 == 0:  # a root: its children name it as parent
            places.extend(_find_all(body, b"\x22\x08" + ids[i], 2))
    hex_offsets = _hex_offsets(body, ITEMS_PER_REQUEST)
    return Template("traces", body, ITEMS_PER_REQUEST, offsets, ">", hex_offsets=hex_offsets)


def _find_all(body: bytes, needle: bytes, skip: int) -> list[int]:
    out = []
    at = body.find(needle)
    while at >= 0:
        out.append(at + skip)
        at = body.find(needle, at + 1)
    return out


# -- metrics --------------------------------------------------------------------------------------

# (kind, points) per metric; 512 points in all.
_METRIC_PLAN = (
    ("sum_int", 128),
    ("sum_double_delta", 64),
    ("gauge_double", 96),
    ("gauge_int", 32),
    ("histogram", 96),
    ("exponential_histogram", 64),
    ("summary", 32),
)
_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]


def _point_attributes(rng: random.Random, i: int, kind: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "http.route": _ROUTES[i % len(_ROUTES)],
        "http.request.method": ["GET", "POST", "PUT"][i % 3],
        "http.response.status_code": [200, 201, 404, 500][(i // 3) % 4],
    }
    if i % 2:
        attrs["server.address"] = "shop.example.com"
    if kind.startswith("gauge"):
        attrs["process.cpu.state"] = ["user", "system"][i % 2]
    attrs["series"] = i
    return attrs


def _metrics(seed: int) -> Template:
    rng = random.Random(seed)
    request = ExportMetricsServiceRequest()
    sm = _flask_scope(request.resource_metrics, "scope_metrics", seed)
    now = time.time_ns()
    base = (now // _METRIC_ID_SPAN_NS - 2) * _METRIC_ID_SPAN_NS
    start = base - 3_600_000_000_000
    # Placeholder times, distinct and recognisable; every point's is replaced on each send.
    placeholders = [base + 7_777_777 * (i + 1) + seed % 1000 for i in range(ITEMS_PER_REQUEST)]
    index = 0
    for kind, count in _METRIC_PLAN:
        metric = sm.metrics.add()
        metric.name = f"bench.{kind}"
        metric.description = f"{kind} points for the benchmark"
        metric.unit = "ms" if "histogram" in kind or kind == "summary" else "1"
        for j in range(count):
            attrs = _point_attributes(rng, j, kind)
            t = placeholders[index]
            index += 1
            point: Any
            if kind == "sum_int":
                metric.sum.aggregation_temporality = 2
                metric.sum.is_monotonic = True
                point = metric.sum.data_points.add()
                point.as_int = rng.randint(0, 10**9)
            elif kind == "sum_double_delta":
                metric.sum.aggregation_temporality = 1
                point = metric.sum.data_points.add()
                point.as_double = rng.random() * 1e3
            elif kind == "gauge_double":
                point = metric.gauge.data_points.add()
                point.as_double = rng.random() * 100
            elif kind == "gauge_int":
                point = metric.gauge.data_points.add()
                point.as_int = rng.randint(0, 10**6)
            elif kind == "histogram":
                metric.histogram.aggregation_temporality = 2
                point = metric.histogram.data_points.add()
                counts = [rng.randint(0, 100) for _ in range(len(_BOUNDS) + 1)]
                point.bucket_counts.extend(counts)
                point.explicit_bounds.extend(_BOUNDS)
                point.count = sum(counts)
                point.sum = rng.random() * 1e4
                point.min, point.max = 0.001, 12.5
                if j % 8 == 0:
                    exemplar = point.exemplars.add()
                    exemplar.time_unix_nano = now - 1_000_000
                    exemplar.as_double = 0.42
                    exemplar.trace_id = rng.randbytes(16)
                    exemplar.span_id = rng.randbytes(8)
            elif kind == "exponential_histogram":
                metric.exponential_histogram.aggregation_temporality = 2
                point = metric.exponential_histogram.data_points.add()
                point.scale = 3
                point.zero_count = rng.randint(0, 5)
                point.positive.offset = 10
                point.positive.bucket_counts.extend(rng.randint(0, 50) for _ in range(20))
                point.count = point.zero_count + sum(point.positive.bucket_counts)
                point.sum = rng.random() * 1e4
                point.min, point.max = 0.5, 900.0
            else:
                point = metric.summary.data_points.add()
                point.count = rng.randint(1, 10**5)
                point.sum = rng.random() * 1e5
                for q in (0.5, 0.9, 0.99):
                    quantile = point.quantile_values.add()
                    quantile.quantile = q
                    quantile.value = q * 100
            point.start_time_unix_nano = start
            point.time_unix_nano = t
            set_attributes(point.attributes, attrs)
    body = request.SerializeToString()
    offsets = [_find_all(body, b"\x19" + struct.pack("<Q", t), 1) for t in placeholders]
    for i, places in enumerate(offsets):
        if len(places) != 1:
            raise RuntimeError(f"point time {i} found {len(places)} times in the template")
    return Template("metrics", body, ITEMS_PER_REQUEST, offsets, "<", base=base)


# -- logs -----------------------------------------------------------------------------------------


def _logs(seed: int, dataset: str, namespace: str) -> Template:
    rng = random.Random(seed)
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    routing = {}
    if dataset:
        routing["data_stream.dataset"] = dataset
    if namespace:
        routing["data_stream.namespace"] = namespace
    set_attributes(rl.resource.attributes, _resource(seed, routing))
    sl = rl.scope_logs.add()
    sl.scope.name = "checkout.api"
    sl.scope.version = "1.4.2"
    ids = _unique_ids(rng, ITEMS_PER_REQUEST)
    now = time.time_ns()
    for i in range(ITEMS_PER_REQUEST):
        record = sl.log_records.add()
        record.time_unix_nano = now + i * 1000
        record.observed_time_unix_nano = now + i * 1000 + 17
        record.severity_number = rng.choice((9, 9, 9, 13, 17))
        record.severity_text = {9: "INFO", 13: "WARN", 17: "ERROR"}[record.severity_number]
        record.body.string_value = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))
        record.trace_id = rng.randbytes(16)
        record.span_id = ids[i]
        record.flags = 1
        set_attributes(
            record.attributes,
            {
                "code.function": "handle_request",
                "code.lineno": rng.randint(1, 900),
                "http.route": _ROUTES[i % len(_ROUTES)],
                "http.response.status_code": rng.choice([200, 200, 404, 500]),
                "enduser.id": f"user-{rng.randint(1, 10**5)}",
                "app.request.id": _hex(rng),
                "thread.name": f"worker-{rng.randint(1, 16)}",
                "duration_ms": rng.random() * 100,
            },
        )
    body = request.SerializeToString()
    offsets = [_find_all(body, b"\x52\x08" + sid, 2) for sid in ids]
    for i, places in enumerate(offsets):
        if len(places) != 1:
            raise RuntimeError(f"log span id {i} found {len(places)} times in the template")
    hex_offsets = _hex_offsets(body, ITEMS_PER_REQUEST)
    return Template("logs", body, ITEMS_PER_REQUEST, offsets, ">", hex_offsets=hex_offsets)
