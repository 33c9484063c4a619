"""OTLP AnyValue -> JSON-ready Python values, as the Timescale converters store attributes.

Shared by `convert.common` (attribute columns) and `convert.identity` (the text of a service
name that is not a string), so both read a value the same way.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any


def double_value(value: float) -> Any:
    """A double as JSON-ready: itself when finite, else the tagged `{"$double": ...}`."""
    if value - value == 0.0:  # finite; NaN and ±inf give NaN here
        return value
    if value != value:
        return {"$double": "NaN"}
    return {"$double": "Infinity" if value > 0 else "-Infinity"}


def any_value(value: Any) -> Any:
    """One OTLP AnyValue as a JSON-ready Python value (see the module docstring)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return double_value(value.double_value)
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return kv_dict(value.kvlist_value.values)
    if kind == "bytes_value":
        return {"$bytes": base64.b64encode(value.bytes_value).decode("ascii")}
    return None


def kv_dict(kvs: Iterable[Any]) -> dict[str, Any]:
    """KeyValue messages as a dict (a repeated key keeps its last value, as jsonb does)."""
    return {kv.key: any_value(kv.value) for kv in kvs}
