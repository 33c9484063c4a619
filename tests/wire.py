"""Protobuf wire format by hand, for bodies the generated classes will not make (hostile input)."""

from __future__ import annotations

from typing import Any


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


def mutated(body: bytes, data: Any, *, min_edits: int = 1) -> bytes:
    """*body* with *min_edits* to 3 bytes flipped, cut or inserted, drawn from hypothesis'
    *data* (the differential tests and the fuzz target's mutations)."""
    from hypothesis import strategies as st

    out = bytearray(body)
    for _ in range(data.draw(st.integers(min_edits, 3))):
        if not out:
            break
        at = data.draw(st.integers(0, len(out) - 1))
        action = data.draw(st.sampled_from(("flip", "cut", "insert")))
        if action == "flip":
            out[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del out[at:]
        else:
            out[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    return bytes(out)
