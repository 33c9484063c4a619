"""The payload of the logs route: one request's `_bulk` items in one buffer.

Both codecs hand the Elasticsearch writer this type: the native one (`ingestd_native`) builds
the buffer directly, the Python reference joins its items. Each item is an action line and a
document line, both `\\n`-terminated; `offsets[i]` is where item i starts. It reads as a
sequence of items (`len`, indexing, iteration) for the writer, which resends single items.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import overload


class BulkItems(Sequence[bytes]):
    """A request's bulk items: `data` holds them back to back, `offsets` where each starts."""

    __slots__ = ("data", "offsets")

    def __init__(self, data: bytes, offsets: Sequence[int]) -> None:
        self.data = data
        self.offsets = offsets

    @classmethod
    def of(cls, items: Sequence[bytes]) -> BulkItems:
        """The payload of separately encoded *items*."""
        offsets = array("Q")
        at = 0
        for item in items:
            offsets.append(at)
            at += len(item)
        return cls(b"".join(items), offsets)

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self.offsets)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("bulk item index out of range")
        end = self.offsets[index + 1] if index + 1 < n else len(self.data)
        return self.data[self.offsets[index] : end]

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BulkItems):
            return self.data == other.data and list(self.offsets) == list(other.offsets)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BulkItems({len(self)} items, {len(self.data)} bytes)"
