"""What the trace and metric converters share: attribute encoding, derived ids, time, the payload.

Values follow docs/design.md ("Database contract"):
- attributes become JSON for a jsonb column: string, bool, int (exact), finite double, array ->
  list, key-value list -> object, empty value -> null; NaN/±Infinity and bytes become tagged
  objects `{"$double": "NaN"}` / `{"$bytes": "<base64>"}`. NUL characters, which PostgreSQL
  cannot store in text or jsonb, become U+FFFD and are counted.
- `applicationId` is `ingestd.convert.identity`'s, the same for every signal;
  `resourceId` / `scopeId` the signed xxh3_64 of the message's deterministic serialization plus
  its schema URL.

Rows leave the converters in the form the Timescale writer's binary COPY sends without a Python
call per field (see `ingestd.sinks.timescale`): a timestamptz column gets its binary value, int
microseconds since 2000-01-01 (`pg_micros`), and a jsonb column gets its binary value, a version
byte 1 followed by the JSON text (`JSONB_VERSION + json`).

A known limit of jsonb: a double of magnitude >= 1e16 is written in exponent form, which jsonb
stores as an integral numeric, so it reads back as an int of the same value.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import xxhash
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from ingestd.convert.identity import service_identity
from ingestd.convert.limits import DEFAULT_LIMITS, RequestLimits
from ingestd.convert.values import any_value, kv_dict
from ingestd.model import Converted

# timestamptz is int64 microseconds since 2000-01-01 UTC on the wire.
PG_EPOCH_US = 946_684_800_000_000
INT64_MAX = 2**63 - 1
# OTLP's uint32 fields (flags, dropped counts) go to integer (int4) columns, and its int32 enums
# (span kind, status code, temporality) to smallint (int2). psycopg's C dumpers write the low bits
# of a value that does not fit, without an error, so the converters bring every value into range.
INT32_MAX = 2**31 - 1
INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1
JSONB_VERSION = b"\x01"
JSONB_EMPTY_OBJECT = b"\x01{}"

_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


class BadAttribute(ValueError):
    """A raw attribute that does not decode as an OTLP KeyValue."""


@dataclass(slots=True)
class Rows:
    """A converter's payload for one table: COPY-ready row tuples plus the dimension rows.

    Dimension rows are the distinct ones of this request; the writer upserts those that its
    process has not stored yet.
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    # id -> (attributes jsonb, droppedAttributesCount, schemaUrl)
    resources: dict[int, tuple[bytes, int, str]] = field(default_factory=dict)
    # id -> (name, version, attributes jsonb, droppedAttributesCount, schemaUrl)
    scopes: dict[int, tuple[str, str, bytes, int, str]] = field(default_factory=dict)
    # id -> (name, namespace, environment)
    applications: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # (applicationId, metric name) -> (type, unit, description)
    descriptions: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)


def pg_micros(unix_nano: int) -> int:
    """timestamptz's binary value (microseconds since 2000-01-01) for Unix nanoseconds."""
    return unix_nano // 1000 - PG_EPOCH_US


def int4_bits(value: int) -> int:
    """A uint32 bit field (flags) as int4: the same 32 bits, read as a signed number."""
    return value - 4_294_967_296 if value > INT32_MAX else value


def int4_count(value: int) -> int:
    """A uint32 count (dropped attributes, events, links) as int4, saturating at 2^31-1."""
    return INT32_MAX if value > INT32_MAX else value


def clean_text(text: str) -> tuple[str, int]:
    """*text* with NUL replaced by U+FFFD, and how many were replaced."""
    count = text.count("\x00")
    return (text.replace("\x00", "\ufffd"), count) if count else (text, 0)


# -- attribute values ----------------------------------------------------------------------------


def dumps(value: Any) -> tuple[bytes, int]:
    """JSON bytes of *value* with NUL characters replaced, and how many were replaced."""
    text = orjson.dumps(value)
    if b"\\u0000" not in text:
        return text, 0
    fixed, count = _NUL_ESCAPE.subn(rb"\1\\ufffd", text)
    return fixed, count


def jsonb(value: Any) -> tuple[bytes, int]:
    """The binary jsonb value of *value*, and the NUL count (see `dumps`)."""
    text, nul = dumps(value)
    return JSONB_VERSION + text, nul


# Bytes of attribute JSON one converter keeps memoised (see AttributeEncoder).
ATTRIBUTE_CACHE_BYTES = 48 * 1024 * 1024


class AttributeEncoder:
    """Raw KeyValue bytes (see `convert.wire`) -> JSON, memoised by those bytes.

    Three caches, each emptied when it grows past its share of the byte budget (which bounds
    memory whatever the input): single attribute -> its JSON member text (`"key":value`), so a
    list is encoded by joining cached members, with no dict and no orjson call per record
    (a repeated key is kept twice in the text and jsonb keeps the last, as a dict would);
    single attribute -> (key, value), for events and links that nest attributes in larger
    JSON; whole lists -> jsonb bytes, for records whose lists repeat (every series of a metric).
    NUL-bearing attributes are never cached, so each occurrence is counted in `nul_replaced`.
    Not thread-safe: one per event loop.
    """

    def __init__(self, max_bytes: int = ATTRIBUTE_CACHE_BYTES) -> None:
        self._members: dict[bytes, bytes] = {}
        self._pairs: dict[bytes, tuple[str, Any]] = {}
        self._lists: dict[tuple[bytes, ...], bytes] = {}
        self._budget = max_bytes // 3
        self._sizes = {"members": 0, "pairs": 0, "lists": 0}
        self.nul_replaced = 0

    def jsonb(self, raws: Iterable[bytes]) -> bytes:
        """The binary jsonb value of an attribute list; raises BadAttribute."""
        members = self._members
        parts = []
        for raw in raws:
            member = members.get(raw)
            if member is None:
                member = self._member(raw)
            parts.append(member)
        return b"\x01{" + b",".join(parts) + b"}"

    def jsonb_memo(self, raws: Iterable[bytes]) -> bytes:
        """`jsonb`, remembering whole lists: for lists that repeat (metric series)."""
        key = tuple(raws)
        cached = self._lists.get(key)
        if cached is not None:
            return cached
        nul_before = self.nul_replaced
        value = self.jsonb(key)
        if self.nul_replaced == nul_before:
            self._remember(self._lists, "lists", key, value, len(value) * 2)
        return value

    def as_dict(self, raws: Iterable[bytes]) -> dict[str, Any]:
        """An attribute list as a dict (do not mutate: values may be shared); BadAttribute."""
        pairs = self._pairs
        out: dict[str, Any] = {}
        for raw in raws:
            pair = pairs.get(raw)
            if pair is None:
                key, value, nul = self._decode(raw)
                pair = (key, value)
                if not nul:
                    self._remember(pairs, "pairs", raw, pair, len(raw) * 3)
            out[pair[0]] = pair[1]
        return out

    def _member(self, raw: bytes) -> bytes:
        key, value, nul = self._decode(raw)
        member = orjson.dumps({key: value})[1:-1]
        if not nul:
            self._remember(self._members, "members", raw, member, len(raw) + len(member))
        return member

    def _remember(self, cache: dict[Any, Any], name: str, key: Any, value: Any, size: int) -> None:
        size += 100  # dict slot and object headers, roughly
        if self._sizes[name] + size > self._budget:
            cache.clear()
            self._sizes[name] = 0
        cache[key] = value
        self._sizes[name] += size

    def _decode(self, raw: bytes) -> tuple[str, Any, int]:
        """(key, value, NUL characters replaced) of one raw KeyValue; BadAttribute."""
        try:
            kv = KeyValue.FromString(raw)
        except DecodeError as exc:
            raise BadAttribute(f"attribute does not decode: {exc}") from exc
        key, value = kv.key, any_value(kv.value)
        if "\x00" not in key and not _holds_nul(value):
            return key, value, 0
        text, nul = dumps({key: value})
        self.nul_replaced += nul
        cleaned: dict[str, Any] = orjson.loads(text)
        ((key, value),) = cleaned.items()
        return key, value, nul


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | dict):
        return b"\\u0000" in orjson.dumps(value)
    return False


# -- derived ids ----------------------------------------------------------------------------------


def _signed64(value: int) -> int:
    return value - (1 << 64) if value > INT64_MAX else value


def message_id(message: Any, schema_url: str) -> int:
    """resourceId / scopeId: signed xxh3_64 of the deterministic serialization + schema URL."""
    hasher = xxhash.xxh3_64(message.SerializeToString(deterministic=True))
    hasher.update(schema_url.encode())
    return _signed64(hasher.intdigest())


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """What every record of one resource shares."""

    resource_id: int
    application_id: str


class RowsConverter:
    """A Timescale route's converter: a signal's `convert_request` with the process's attribute
    cache and clock. Records later than now + *max_future_skew_s* are refused. *application_id*
    is a registered application's (its ingest key authenticated the request): it overrides the
    id derived from each resource."""

    convert_request: Callable[..., Converted]

    def __init__(
        self,
        *,
        max_future_skew_s: float,
        limits: RequestLimits = DEFAULT_LIMITS,
        clock_ns: Callable[[], int] = time.time_ns,
        cache_bytes: int = ATTRIBUTE_CACHE_BYTES,
    ) -> None:
        # The per-record caps of `limits` (resources, scopes and records are checked on the
        # wire before parsing, `convert.limits`).
        self.limits = limits
        self._skew_ns = int(max_future_skew_s * 1e9)
        self._clock_ns = clock_ns
        self._attributes = AttributeEncoder(cache_bytes)

    def __call__(self, request: Any, application_id: str = "") -> Converted:
        return self.convert_request(
            request,
            self._attributes,
            max_time_unix_nano=self._clock_ns() + self._skew_ns,
            application_id=application_id,
            limits=self.limits,
        )


def add_resource(
    rows: Rows, resource: Any, schema_url: str, *, override: str = ""
) -> tuple[ResourceInfo, int]:
    """Register *resource* (and its application) in *rows*; return its ids and the NUL count.

    *override* is a registered application's id (its ingest key authenticated the request):
    it replaces the id derived from the resource, and no applications row is written for it
    (a registered application's row is Deep Eyes', never ingest's).
    """
    attributes = kv_dict(resource.attributes)
    resource_id = message_id(resource, schema_url)
    attrs_jsonb, nul = jsonb(attributes)
    url, nul_url = clean_text(schema_url)
    dropped = int4_count(resource.dropped_attributes_count)
    rows.resources[resource_id] = (attrs_jsonb, dropped, url)
    if override:
        return ResourceInfo(resource_id, override), nul + nul_url
    identity = service_identity(resource.attributes)
    app_id = identity.application_id
    if app_id not in rows.applications:
        cleaned = [clean_text(identity.name), clean_text(identity.namespace)]
        cleaned.append(clean_text(identity.environment))
        nul += sum(n for _, n in cleaned)
        name, namespace, environment = (text for text, _ in cleaned)
        rows.applications[app_id] = (name, namespace, environment)
    return ResourceInfo(resource_id, app_id), nul + nul_url


def add_scope(rows: Rows, scope: Any, schema_url: str) -> tuple[int, int]:
    """Register an instrumentation scope in *rows*; return its id and the NUL count."""
    scope_id = message_id(scope, schema_url)
    if scope_id in rows.scopes:
        return scope_id, 0
    attrs_jsonb, nul = jsonb(kv_dict(scope.attributes))
    name, n1 = clean_text(scope.name)
    version, n2 = clean_text(scope.version)
    url, n3 = clean_text(schema_url)
    dropped = int4_count(scope.dropped_attributes_count)
    rows.scopes[scope_id] = (name, version, attrs_jsonb, dropped, url)
    return scope_id, nul + n1 + n2 + n3


def time_problem(unix_nano: int, max_unix_nano: int) -> str | None:
    """Why a record timestamp cannot be stored, or None when it can."""
    if unix_nano == 0:
        return "timestamp_missing"
    if unix_nano > INT64_MAX:
        return "timestamp_out_of_range"
    if unix_nano > max_unix_nano:
        return "timestamp_in_future"
    return None
