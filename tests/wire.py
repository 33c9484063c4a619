"""Protobuf wire format by hand, for bodies the generated classes will not make (hostile input)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """*n* (non-negative) as a base-128 varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """Field *number* as a length-delimited record (wire type 2) holding *payload*."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload
