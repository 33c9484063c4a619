"""Big requests to a thread-safe (native) converter are converted off the event loop."""

from __future__ import annotations

import threading
from typing import Any

from ingestd.config import IngestConfig
from ingestd.ingest import CONVERT_INLINE_MAX_BYTES, Converted, Ingest


class _Recording:
    """A converter that records the thread it ran on."""

    takes_bytes = True

    def __init__(self, thread_safe: bool) -> None:
        self.thread_safe = thread_safe
        self.threads: list[int] = []

    def __call__(self, request: Any) -> Converted:
        self.threads.append(threading.get_ident())
        return Converted(payload=None, items=0, nbytes=0)


async def test_big_request_runs_on_a_conversion_thread() -> None:
    """A request of CONVERT_INLINE_MAX_BYTES goes to the pool; a small one stays inline."""
    ingest = Ingest(IngestConfig(), {})
    convert = _Recording(thread_safe=True)
    await ingest._convert(convert, b"x" * CONVERT_INLINE_MAX_BYTES)
    await ingest._convert(convert, b"x" * 10)
    loop_thread = threading.get_ident()
    assert convert.threads[0] != loop_thread
    assert convert.threads[1] == loop_thread


async def test_converter_that_is_not_thread_safe_stays_inline() -> None:
    """The Python reference (shared attribute cache) is never run on another thread."""
    ingest = Ingest(IngestConfig(), {})
    convert = _Recording(thread_safe=False)
    await ingest._convert(convert, b"x" * CONVERT_INLINE_MAX_BYTES)
    assert convert.threads == [threading.get_ident()]
