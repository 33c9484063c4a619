"""Large requests are converted off the event loop, by one mechanism for both codecs: the
route's `convert_large` on a conversion thread (`Ingest._convert`); and what a converter is
given of a protobuf body (`Ingest._message`)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ingestd.config import IngestConfig, LimitsConfig, TenantLimitConfig
from ingestd.errors import BadRequest
from ingestd.ingest import CONVERT_THREADS, Ingest, Route
from ingestd.model import Converted, Signal
from ingestd.state.ratelimit import RateLimiter
from tests.samples import span_request


class _Recording:
    """A converter that records the thread it ran on and the application id it was given."""

    takes_bytes = True

    def __init__(self, thread_safe: bool) -> None:
        self.thread_safe = thread_safe
        self.calls: list[tuple[int, str]] = []

    def __call__(self, request: Any, application_id: str = "") -> Converted:
        self.calls.append((threading.get_ident(), application_id))
        return Converted(payload=None, items=0, nbytes=0)


def _route(convert: _Recording, large: _Recording | None) -> Route:
    return Route(convert, batcher=None, convert_large=large)  # type: ignore[arg-type]


async def test_large_request_runs_on_a_conversion_thread() -> None:
    """At convert_in_thread_bytes a request goes to convert_large on a thread; below, inline."""
    ingest = Ingest(IngestConfig(), {})
    native = _Recording(thread_safe=True)
    route = _route(native, native)
    size = IngestConfig().convert_in_thread_bytes
    await ingest._convert(route, b"x", size, "app-1")
    await ingest._convert(route, b"x", size - 1, "")
    loop_thread = threading.get_ident()
    assert native.calls[0][0] != loop_thread
    assert native.calls[0][1] == "app-1"
    assert native.calls[1] == (loop_thread, "")


async def test_thread_safe_converter_gets_the_pool_and_the_reference_one_thread() -> None:
    """The native codec (thread_safe) gets CONVERT_THREADS threads, the Python reference's
    large converter (caches of its own) one; the small-request converter is never used."""
    ingest = Ingest(IngestConfig(), {})
    size = IngestConfig().convert_in_thread_bytes
    small, reference_large = _Recording(thread_safe=False), _Recording(thread_safe=False)
    native = _Recording(thread_safe=True)
    await ingest._convert(_route(small, reference_large), b"x", size, "")
    await ingest._convert(_route(native, native), b"x", size, "")
    assert small.calls == []
    assert len(reference_large.calls) == 1
    assert ingest._converting[False]._max_workers == 1
    assert ingest._converting[True]._max_workers == CONVERT_THREADS


async def test_route_without_a_large_converter_converts_inline() -> None:
    """No convert_large: every request, however large, is converted on the event loop."""
    ingest = Ingest(IngestConfig(), {})
    convert = _Recording(thread_safe=False)
    await ingest._convert(_route(convert, None), b"x", 1 << 30, "")
    assert convert.calls == [(threading.get_ident(), "")]


def _ingest(convert: Any, limits: RateLimiter | None = None) -> Ingest:
    route = Route(convert, batcher=None)  # type: ignore[arg-type]
    return Ingest(IngestConfig(), {Signal.TRACES: route}, limits=limits)


def test_protobuf_body_is_not_parsed_when_only_the_native_codec_reads_it() -> None:
    """A converter that takes bytes and no rate limits: export passes the body itself on."""
    body = span_request(3).SerializeToString()
    assert _ingest(_Recording(thread_safe=True))._message(Signal.TRACES, body) is body


def test_protobuf_body_is_parsed_for_the_reference_and_for_rate_limits() -> None:
    """The Python codec, or rate limits (they count the message), get the parsed request;
    a body that is not a request is BadRequest either way."""
    body = span_request(3).SerializeToString()
    reference = _Recording(thread_safe=False)
    reference.takes_bytes = False  # type: ignore[misc]
    parsed = _ingest(reference)._message(Signal.TRACES, body)
    assert len(parsed.resource_spans[0].scope_spans[0].spans) == 3
    limited = RateLimiter(LimitsConfig(default=TenantLimitConfig(items_per_s=1e9)), None)
    native = _ingest(_Recording(thread_safe=True), limits=limited)
    assert native._message(Signal.TRACES, body) == parsed
    with pytest.raises(BadRequest):
        native._message(Signal.TRACES, b"\xff\xff")
