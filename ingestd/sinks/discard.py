"""A writer that stores nothing: the receive path alone, for benchmarks (`discard: true`).

`Batcher -> DiscardWriter` acknowledges every batch at once, so a run measures what ingestd
itself costs (receive, decode, convert, batch, acknowledge) without a database behind it. It is
selected in the config (`sinks.timescale.discard`, `sinks.elasticsearch.discard`), never patched
in, and logged loudly at startup: data sent to a discarding sink is lost by design.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from ingestd.batching import Batch
from ingestd.model import PartResult

log = structlog.get_logger("ingestd.sinks.discard")

_STORED = PartResult()


class DiscardWriter:
    """`BatchWriter` that drops every batch and reports each part stored."""

    def __init__(self, name: str) -> None:
        self.name = f"discard.{name}"
        self.batches = 0
        self.items = 0

    async def write_batch(self, batch: Batch) -> Sequence[PartResult]:
        """Return one success per part without storing anything; never raises."""
        self.batches += 1
        self.items += batch.items
        return [_STORED] * len(batch.parts)

    def status(self) -> dict[str, int]:
        """Counters for /status: what was acknowledged and thrown away."""
        return {"batches": self.batches, "discarded_items": self.items}
