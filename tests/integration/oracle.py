"""What the database must hold for a given OTLP message: an independent reading of design.md.

These functions restate the database contract for the tests; they do not import the converters,
so a converter bug cannot hide behind the same code on both sides.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from typing import Any

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "double_value":
        d = value.double_value
        if math.isnan(d):
            return {"$double": "NaN"}
        if math.isinf(d):
            return {"$double": "Infinity" if d > 0 else "-Infinity"}
        return d
    if kind == "bytes_value":
        return {"$bytes": base64.b64encode(value.bytes_value).decode()}
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def micros(timestamp: dt.datetime) -> int:
    """Microseconds since the Unix epoch of a timestamptz read back."""
    return (timestamp - EPOCH) // dt.timedelta(microseconds=1)


def double_json(value: float) -> Any:
    if math.isnan(value):
        return {"$double": "NaN"}
    if math.isinf(value):
        return {"$double": "Infinity" if value > 0 else "-Infinity"}
    return value
