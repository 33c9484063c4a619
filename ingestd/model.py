"""The vocabulary every stage shares: signals, requests, converted payloads, parts and results.

The bottom of the house: it imports nothing of ingestd, so the pure converters
(`ingestd.convert`), the decoders and the receivers can use it without loading the batcher,
the shared state or the metrics. Everything that flows between stages is named here.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Signal(enum.StrEnum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who sent a request and how."""

    transport: str  # "grpc" or "http"
    tenant: str = ""
    # The registered application whose ingest key authenticated the request (ingestd.appkeys):
    # its records are stored under this id whatever their resources say. "" without a key.
    application_id: str = ""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What the client hears on success: how many records were refused for good, and why."""

    rejected: int = 0
    message: str = ""


@dataclass(slots=True)
class Converted:
    """A converter's output for one request: the sink payload plus what it refused."""

    payload: Any
    items: int
    nbytes: int
    rejected: int = 0
    # reason -> count, for metrics; plus one example message for the client.
    reject_reasons: Counter[str] = field(default_factory=Counter)
    reject_example: str = ""
    # NUL characters replaced by U+FFFD (PostgreSQL cannot store them in text or jsonb).
    nul_replaced: int = 0

    def reject(self, reason: str, example: str) -> None:
        self.rejected += 1
        self.reject_reasons[reason] += 1
        if not self.reject_example:
            self.reject_example = example


# A signal's converter: one decoded export request in, its sink's payload out. Pure. Called
# with a registered application's id as a second argument when an ingest key authenticated the
# request: every record is then stored under that id.
Converter = Callable[..., Converted]


@dataclass(frozen=True, slots=True)
class PartResult:
    """What the sink did with one part: how many of its items it refused for good, and why."""

    rejected: int = 0
    message: str = ""
    # True when an earlier attempt (or another replica) had already stored this part.
    duplicate: bool = False


@dataclass(eq=False, slots=True)
class Part:
    """One request's items for one sink. `payload` is whatever the sink's writer understands."""

    payload: Any
    items: int
    nbytes: int
    # The request's identity (dedup key); b"" when the caller has none.
    key: bytes = b""
    enqueued_at: float = 0.0
    done: asyncio.Future[PartResult] = field(default_factory=lambda: _new_future())


def _new_future() -> asyncio.Future[PartResult]:
    future: asyncio.Future[PartResult] = asyncio.get_running_loop().create_future()
    # A request that gave up waiting (ack timeout, client gone) leaves nobody to read the
    # outcome; reading it here keeps asyncio from logging "exception never retrieved".
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future
