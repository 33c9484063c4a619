"""The payload of the traces and metrics routes: rows already in PostgreSQL's binary COPY form.

Both codecs hand the Timescale writer this one type: the native one (`ingestd_native`) builds
it directly from the request bytes, the Python reference encodes its row tuples here. A part
carries its tuples only (int16 field count, then per field an int32 length and the bytes, -1
for NULL; network byte order), never the COPY signature or trailer: the writer sends those once
per batch, around the parts of many requests (postgres `doc/src/sgml/ref/copy.sgml`).

Each field is written as psycopg's binary dumpers write it under `set_types`: int2/int4/int8
and float8 big-endian, bool one byte, text UTF-8, bytea as is (timestamptz and jsonb already
arrive in their binary forms, see `ingestd.convert.common`).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingestd.convert.common import Rows

# The stream signature, flags and header extension length; then the trailer.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)

_NULL = struct.pack(">i", -1)
_INT8 = struct.Struct(">iq").pack
_INT4 = struct.Struct(">ii").pack
_INT2 = struct.Struct(">ih").pack
_FLOAT8 = struct.Struct(">id").pack
_LEN = struct.Struct(">i").pack
_BOOL = (b"\x00\x00\x00\x01\x00", b"\x00\x00\x00\x01\x01")


def _int8(value: Any) -> bytes:
    return _INT8(8, value)


def _int4(value: Any) -> bytes:
    return _INT4(4, value)


def _int2(value: Any) -> bytes:
    return _INT2(2, value)


def _float8(value: Any) -> bytes:
    return _FLOAT8(8, value)


def _bool(value: Any) -> bytes:
    return _BOOL[bool(value)]


def _text(value: str) -> bytes:
    data = value.encode()
    return _LEN(len(data)) + data


def _bytea(value: bytes) -> bytes:
    return _LEN(len(value)) + value


_DUMPERS: dict[str, Callable[[Any], bytes]] = {
    "int8": _int8,
    "int4": _int4,
    "int2": _int2,
    "float8": _float8,
    "bool": _bool,
    "text": _text,
    "bytea": _bytea,
}


@dataclass(slots=True)
class CopyRows:
    """One request's rows for one table in binary COPY form, plus its dimension rows.

    `offsets[i]` is where row i starts in `data` (a COPY error's line number -> the row).
    Dimension rows are the distinct ones of this request, as in `convert.common.Rows`.
    """

    data: bytes
    offsets: Sequence[int]
    resources: dict[int, tuple[bytes, int, str]] = field(default_factory=dict)
    scopes: dict[int, tuple[str, str, bytes, int, str]] = field(default_factory=dict)
    applications: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    descriptions: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.offsets)

    def row(self, index: int) -> bytes:
        """The bytes of row *index*."""
        end = self.offsets[index + 1] if index + 1 < len(self.offsets) else len(self.data)
        return self.data[self.offsets[index] : end]


def offsets_of(packed: bytes) -> array[int]:
    """Row offsets sent as native-endian uint64 (the native codec's form)."""
    out = array("Q")
    out.frombytes(packed)
    return out


def encode(rows: Iterable[tuple[Any, ...]], types: Sequence[str]) -> tuple[bytes, array[int]]:
    """Row tuples (in column order) -> (their COPY tuples, each tuple's offset)."""
    dumpers = [_DUMPERS[t] for t in types]
    count = struct.pack(">h", len(types))
    out = bytearray()
    offsets = array("Q")
    for row in rows:
        offsets.append(len(out))
        out += count
        out += b"".join(
            _NULL if value is None else dump(value)
            for dump, value in zip(dumpers, row, strict=True)
        )
    return bytes(out), offsets


_READERS: dict[str, Callable[[bytes], Any]] = {
    "int8": lambda b: struct.unpack(">q", b)[0],
    "int4": lambda b: struct.unpack(">i", b)[0],
    "int2": lambda b: struct.unpack(">h", b)[0],
    "float8": lambda b: struct.unpack(">d", b)[0],
    "bool": lambda b: b != b"\x00",
    "text": lambda b: b.decode(),
    "bytea": bytes,
}


def decode(payload: CopyRows, types: Sequence[str]) -> list[tuple[Any, ...]]:
    """The row tuples back from *payload* (tests and fuzz oracles); ValueError if malformed."""
    readers = [_READERS[t] for t in types]
    data = payload.data
    rows: list[tuple[Any, ...]] = []
    at = 0
    while at < len(data):
        if at != payload.offsets[len(rows)]:
            raise ValueError(f"row {len(rows)} starts at {at}, not at its offset")
        (count,) = struct.unpack_from(">h", data, at)
        if count != len(types):
            raise ValueError(f"row of {count} fields for {len(types)} columns")
        at += 2
        values: list[Any] = []
        for read in readers:
            (size,) = struct.unpack_from(">i", data, at)
            at += 4
            if size < 0:
                values.append(None)
                continue
            if at + size > len(data):
                raise ValueError("field runs past the end of the payload")
            values.append(read(data[at : at + size]))
            at += size
        rows.append(tuple(values))
    if len(rows) != payload.rows:
        raise ValueError(f"{len(rows)} rows for {payload.rows} offsets")
    return rows


def from_rows(rows: Rows, types: Sequence[str]) -> CopyRows:
    """The reference codec's payload: *rows* encoded, dimension rows carried over."""
    data, offsets = encode(rows.rows, types)
    return CopyRows(
        data,
        offsets,
        resources=rows.resources,
        scopes=rows.scopes,
        applications=rows.applications,
        descriptions=rows.descriptions,
    )
