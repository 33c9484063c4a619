"""OTLP logs -> Elasticsearch bulk items (pure: no I/O). Runs inside `Ingest.export`.

One bulk item per log record: a `create` action line with a deterministic `_id` and the document,
both pre-encoded with orjson, routed to the data stream `logs-<dataset>-<namespace>`. The
document follows the OpenTelemetry Collector's `otel` mapping mode (reference otelcol.md E8):

    @timestamp, observed_timestamp   ISO-8601 UTC with 9 fraction digits (date_nanos)
    severity_text, severity_number   omitted when empty / 0
    body.text | body.structured      text for scalars; structured for maps and arrays
    attributes, dropped_attributes_count, event_name, trace_id, span_id (hex), flags
    resource.{attributes,schema_url,dropped_attributes_count}
    scope.{name,version,attributes,schema_url,dropped_attributes_count}
    application_id, data_stream.{type,dataset,namespace}

Resource and scope are encoded once per ResourceLogs / ScopeLogs and spliced into each record's
bytes; only the record's own fields go through orjson per record.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import xxhash

from ingestd.convert.bulk import BulkItems
from ingestd.convert.identity import application_id
from ingestd.model import Converted

if TYPE_CHECKING:
    from ingestd.config import LogsRoutingConfig

DATASET_ATTR = "data_stream.dataset"
NAMESPACE_ATTR = "data_stream.namespace"
TYPE_ATTR = "data_stream.type"
# Routing attributes are written as data_stream.* at the document root, never in attributes.
_ROUTING_ATTRS = (DATASET_ATTR, NAMESPACE_ATTR, TYPE_ATTR)

# The Collector's otel mode appends this to the dataset (`logs-generic.otel-default`), so that
# Elastic's `logs-*.otel-*` templates and dashboards recognise the documents.
OTEL_SUFFIX = ".otel"
DEFAULT_DATASET = "generic"
DEFAULT_NAMESPACE = "default"
# Fleet's data stream naming rules: dataset and namespace at most 100 bytes, no '-' (it
# separates the parts), lower case, none of \ / * ? " < > | , # : or space. We keep [a-z0-9._].
_NAME_MAX = 100
_NOT_ALLOWED = re.compile(r"[^a-z0-9._]")

# date_nanos ends at 2262-04-11T23:47:16.854775807Z (a signed 64-bit nanosecond count).
_DATE_NANOS_MAX = 2**63 - 1
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
_URL_SAFE = bytes.maketrans(b"+/", b"-_")


class LogsConverter:
    """Converts one ExportLogsServiceRequest into bulk items; see the module docstring."""

    def __init__(
        self,
        *,
        dataset: str = DEFAULT_DATASET,
        namespace: str = DEFAULT_NAMESPACE,
        max_future_skew_s: float = 86400.0,
        routes: RoutePolicy | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._dataset = sanitize_dataset(dataset) or DEFAULT_DATASET + OTEL_SUFFIX
        self._namespace = sanitize_namespace(namespace) or DEFAULT_NAMESPACE
        self.routes = routes or RoutePolicy()
        self.routes.fallback = (self._dataset, self._namespace)
        self._max_future_skew_ns = int(max_future_skew_s * 1e9)
        self._now_ns = now_ns

    @property
    def route(self) -> tuple[str, str]:
        """The (dataset, namespace) a record goes to without routing attributes."""
        return self._dataset, self._namespace

    @property
    def max_future_skew_ns(self) -> int:
        return self._max_future_skew_ns

    def __call__(self, request: Any, application_id: str = "") -> Converted:
        """*application_id*: a registered application's (its ingest key authenticated the
        request). Every document then carries it, and goes to the namespace of that
        application (`application_namespace`): `data_stream.namespace` attributes are ignored,
        so a key cannot write into another application's data streams."""
        items: list[bytes] = []
        out = Converted(payload=items, items=0, nbytes=0)
        now = self._now_ns()
        latest = min(now + self._max_future_skew_ns, _DATE_NANOS_MAX)
        seen: dict[bytes, int] = {}
        for resource_logs in request.resource_logs:
            try:
                resource = _Resource(
                    resource_logs,
                    self._dataset,
                    self._namespace,
                    self.routes.from_attributes,
                    application_id,
                )
            except orjson.JSONEncodeError as exc:
                for scope_logs in resource_logs.scope_logs:
                    _refuse_all(out, scope_logs, "resource", exc)
                continue
            for scope_logs in resource_logs.scope_logs:
                try:
                    scope = _Scope(resource, scope_logs, self.routes)
                except orjson.JSONEncodeError as exc:
                    _refuse_all(out, scope_logs, "scope", exc)
                    continue
                for record in scope_logs.log_records:
                    try:
                        item = scope.encode(record, now, latest, seen)
                    except _Refused as exc:
                        out.reject(exc.reason, exc.message)
                        continue
                    items.append(item)
                    out.nbytes += len(item)
        out.items = len(items)
        out.payload = BulkItems.of(items)
        return out


def _refuse_all(out: Converted, scope_logs: Any, what: str, exc: Exception) -> None:
    """Refuse every record of *scope_logs*: their shared *what* cannot be encoded as JSON."""
    for _ in scope_logs.log_records:
        out.reject("unencodable", f"log record's {what} cannot be encoded as JSON: {exc}")


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _Resource:
    """What every record of one ResourceLogs shares, converted once."""

    __slots__ = ("app_id", "dataset", "encoded", "locked", "namespace", "routed", "serialized")

    def __init__(
        self, resource_logs: Any, dataset: str, namespace: str, routed: bool, registered: str = ""
    ) -> None:
        resource = resource_logs.resource
        attributes, dropped = _attributes(resource.attributes)
        self.routed = routed
        if routed:
            dataset, namespace = _route(attributes, dataset, namespace)
        self.dataset, self.namespace = dataset, namespace
        self.app_id = registered or application_id(resource.attributes)
        # A registered application's documents stay in its own namespace.
        self.locked = bool(registered)
        if registered:
            self.namespace = application_namespace(registered)
        fields: dict[str, Any] = {}
        if attributes:
            fields["attributes"] = attributes
        if resource_logs.schema_url:
            fields["schema_url"] = resource_logs.schema_url
        if dropped := dropped + resource.dropped_attributes_count:
            fields["dropped_attributes_count"] = dropped
        self.encoded = orjson.dumps(fields)
        self.serialized = resource.SerializeToString(deterministic=True) + (
            resource_logs.schema_url.encode()
        )


class _Scope:
    """What every record of one ScopeLogs shares: the encoded tail of each document."""

    __slots__ = (
        "_policy",
        "_routes",
        "_shared",
        "dataset",
        "locked",
        "namespace",
        "routed",
        "seed",
    )

    def __init__(self, resource: _Resource, scope_logs: Any, policy: RoutePolicy) -> None:
        scope = scope_logs.scope
        attributes, dropped = _attributes(scope.attributes)
        self._policy = policy
        self.routed = resource.routed
        self.locked = resource.locked
        self.dataset, self.namespace = resource.dataset, resource.namespace
        if self.routed:
            self.dataset, self.namespace = _route(attributes, self.dataset, self.namespace)
        if self.locked:
            self.namespace = resource.namespace
        fields: dict[str, Any] = {}
        if scope.name:
            fields["name"] = scope.name
        if scope.version:
            fields["version"] = scope.version
        if attributes:
            fields["attributes"] = attributes
        if scope_logs.schema_url:
            fields["schema_url"] = scope_logs.schema_url
        if dropped := dropped + scope.dropped_attributes_count:
            fields["dropped_attributes_count"] = dropped
        # The document after the record's own fields, minus data_stream (it depends on routing).
        self._shared = (
            b',"application_id":"'
            + resource.app_id.encode()
            + b'","resource":'
            + resource.encoded
            + b',"scope":'
            + orjson.dumps(fields)
            + b"}"
        )
        # Ids are unique per resource + scope + record content (see `encode`).
        self.seed = xxhash.xxh3_64_intdigest(
            resource.serialized
            + b"\x00"
            + scope.SerializeToString(deterministic=True)
            + scope_logs.schema_url.encode()
        )
        self._routes: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    def encode(self, record: Any, now: int, latest: int, seen: dict[bytes, int]) -> bytes:
        """One bulk item for *record*; raises _Refused when it cannot be stored."""
        # Each field read from a upb message costs ~70 ns (a repeated field ~250 ns): read once.
        observed = record.observed_time_unix_nano
        timestamp = record.time_unix_nano or observed or now
        if timestamp > latest:
            raise _Refused(
                "future_timestamp",
                f"log record time {timestamp} ns is more than the allowed skew in the future",
            )
        doc: dict[str, Any] = {"@timestamp": iso_nanos(timestamp)}
        if observed:
            doc["observed_timestamp"] = iso_nanos(min(observed, latest))
        if text := record.severity_text:
            doc["severity_text"] = text
        if number := record.severity_number:
            doc["severity_number"] = number
        if trace_id := record.trace_id:
            doc["trace_id"] = trace_id.hex()
        if span_id := record.span_id:
            doc["span_id"] = span_id.hex()
        if flags := record.flags:
            doc["flags"] = flags
        dataset, namespace = self.dataset, self.namespace
        dropped = record.dropped_attributes_count
        event_name = record.event_name
        if key_values := record.attributes:
            attributes, blank = _attributes(key_values)
            dropped += blank
            if self.routed and (
                DATASET_ATTR in attributes
                or NAMESPACE_ATTR in attributes
                or TYPE_ATTR in attributes
            ):
                dataset, routed = _route(attributes, dataset, namespace)
                if not self.locked:
                    namespace = routed
            if attributes:
                doc["attributes"] = attributes
            if not event_name:
                # Older SDKs carry the event name as an attribute (as the Collector reads it).
                name = attributes.get("event.name")
                event_name = name if isinstance(name, str) else ""
        if event_name:
            doc["event_name"] = event_name
        if dropped:
            doc["dropped_attributes_count"] = dropped
        body = record.body  # an unset body reads as an empty AnyValue
        if text := body.string_value:
            doc["body"] = {"text": text}
        elif (other := _body(body)) is not None:
            doc["body"] = other
        try:
            own = orjson.dumps(doc)
        except orjson.JSONEncodeError as exc:
            raise _Refused("unencodable", f"log record cannot be encoded as JSON: {exc}") from exc

        action, tail = self._route_bytes(dataset, namespace)
        return action + self._id(record, seen) + b'"}}\n' + own[:-1] + tail

    def _id(self, record: Any, seen: dict[bytes, int]) -> bytes:
        digest = xxhash.xxh3_128_digest(record.SerializeToString(deterministic=True), self.seed)
        # Two identical records in one request are two log lines: both are kept, the second
        # with an ordinal. The same request sent again yields the same ids, so it adds nothing.
        ordinal = seen.get(digest, 0)
        seen[digest] = ordinal + 1
        if ordinal:
            digest = xxhash.xxh3_128_digest(digest + ordinal.to_bytes(4, "big"))
        return binascii.b2a_base64(digest, newline=False).translate(_URL_SAFE)[:22]

    def _route_bytes(self, dataset: str, namespace: str) -> tuple[bytes, bytes]:
        key = (dataset, namespace)
        cached = self._routes.get(key)
        if cached is None:
            if self.locked:
                # A registered application keeps its namespace; only the dataset is bounded.
                dataset = self._policy.admit(dataset, namespace)[0]
            else:
                dataset, namespace = self._policy.admit(dataset, namespace)
            index = f"logs-{dataset}-{namespace}"
            action = b'{"create":{"_index":"' + index.encode() + b'","_id":"'
            data_stream = orjson.dumps({"type": "logs", "dataset": dataset, "namespace": namespace})
            tail = b',"data_stream":' + data_stream + self._shared + b"\n"
            cached = self._routes[key] = (action, tail)
        return cached


class RoutePolicy:
    """Which data streams records may be routed to by their `data_stream.*` attributes.

    Every distinct dataset/namespace a client sends creates a data stream (a shard or more
    each), so routing is bounded: *from_attributes* False ignores the attributes (they stay in
    `attributes`); a route must match one of *allowed_datasets* / *allowed_namespaces*
    (fnmatch patterns on the sanitized names; empty: any); and at most *max_routes* distinct
    routes are taken per process. A record whose route is refused goes to the *fallback*
    route (the configured dataset and namespace) and is counted in `refused`. Called once per
    distinct route of a scope, not per record; safe from several threads (a set and a counter).
    """

    def __init__(
        self,
        *,
        from_attributes: bool = True,
        allowed_datasets: Sequence[str] = (),
        allowed_namespaces: Sequence[str] = (),
        max_routes: int = 256,
    ) -> None:
        self.from_attributes = from_attributes
        self._datasets = tuple(allowed_datasets)
        self._namespaces = tuple(allowed_namespaces)
        self.max_routes = max_routes
        self._known: set[tuple[str, str]] = set()
        self.fallback: tuple[str, str] | None = None
        self.refused = 0

    def admit(self, dataset: str, namespace: str) -> tuple[str, str]:
        """The route to write to: (dataset, namespace) when allowed, else the fallback."""
        key = (dataset, namespace)
        if key in self._known or key == self.fallback:
            return key
        if (
            _matches(dataset, self._datasets)
            and _matches(namespace, self._namespaces)
            and len(self._known) < self.max_routes
        ):
            self._known.add(key)
            return key
        self.refused += 1
        return self.fallback or key

    def status(self) -> dict[str, object]:
        """For /status: routes taken, the cap, records' routes sent to the fallback."""
        return {"routes": len(self._known), "max_routes": self.max_routes, "refused": self.refused}


def route_policy(routing: LogsRoutingConfig) -> RoutePolicy:
    """The policy of `sinks.elasticsearch.routing`; one per process."""
    return RoutePolicy(
        from_attributes=routing.from_attributes,
        allowed_datasets=routing.allowed_datasets,
        allowed_namespaces=routing.allowed_namespaces,
        max_routes=routing.max_data_streams,
    )


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _route(attributes: dict[str, Any], dataset: str, namespace: str) -> tuple[str, str]:
    """Take the routing attributes out of *attributes*; they override the inherited route."""
    value = attributes.pop(DATASET_ATTR, None)
    if isinstance(value, str) and (name := sanitize_dataset(value)):
        dataset = name
    value = attributes.pop(NAMESPACE_ATTR, None)
    if isinstance(value, str) and (name := sanitize_namespace(value)):
        namespace = name
    attributes.pop(TYPE_ATTR, None)
    return dataset, namespace


def application_namespace(application_id: str) -> str:
    """The data stream namespace of a registered application: its id made a valid namespace,
    with 8 hex digits of its hash when that changed it (so `app-1` and `app_1` stay apart)."""
    name = sanitize_namespace(application_id)
    if name == application_id:
        return name
    suffix = xxhash.xxh3_64_hexdigest(application_id.encode())[:8]
    return f"{name[: _NAME_MAX - 9]}.{suffix}" if name else f"app.{suffix}"


_sanitized: dict[tuple[str, bool], str] = {}


def sanitize_dataset(value: str) -> str:
    """A dataset name Elasticsearch accepts, with the otel suffix; "" when nothing is left."""
    return _sanitize(value, suffix=True)


def sanitize_namespace(value: str) -> str:
    """A namespace Elasticsearch accepts; "" when nothing is left."""
    return _sanitize(value, suffix=False)


def _sanitize(value: str, *, suffix: bool) -> str:
    # Only the first _NAME_MAX characters can reach the name (each maps to at least one): the
    # cache is keyed by them, so a client's megabyte-long value costs it at most ~400 bytes.
    value = value[:_NAME_MAX]
    key = (value, suffix)
    name = _sanitized.get(key)
    if name is None:
        name = _NOT_ALLOWED.sub("_", value.lower())[:_NAME_MAX].strip("._")
        if name and suffix and not name.endswith(OTEL_SUFFIX):
            name += OTEL_SUFFIX
        if len(_sanitized) > 10_000:  # names come from clients: keep the cache bounded
            _sanitized.clear()
        _sanitized[key] = name
    return name


_second_prefix: dict[int, str] = {}


def iso_nanos(ns: int) -> str:
    """`2018-12-13T14:51:00.300000000Z`: what date_nanos parses, exact to the nanosecond."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    prefix = _second_prefix.get(seconds)
    if prefix is None:
        # Records of one request share few distinct seconds; formatting is the costly part.
        if len(_second_prefix) > 4096:
            _second_prefix.clear()
        prefix = _second_prefix[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{fraction:09d}Z"


def _attributes(key_values: Any) -> tuple[dict[str, Any], int]:
    """Top-level attributes as a JSON object, and how many were dropped.

    A dict keeps the last of duplicate keys: Elasticsearch rejects a document that repeats a
    key (reference E7). It also refuses a whole document for an empty or blank field name;
    such an attribute is dropped (and counted in dropped_attributes_count) so that the record
    is stored.
    """
    # Most values are strings: reading string_value first skips WhichOneof (5x dearer).
    attributes = {kv.key: (v := kv.value).string_value or _attribute(v) for kv in key_values}
    # A blank key sorts first (space and control characters come before any visible one).
    if not attributes or min(attributes)[:1] > " ":
        return attributes, 0
    blank = [key for key in attributes if not key.strip()]
    for key in blank:
        del attributes[key]
    return attributes, len(blank)


def _attribute(value: Any) -> Any:
    """An attribute AnyValue as JSON; like _value, but arrays are made uniform.

    Attributes are indexed with dynamic mappings: an array mixing types (invalid OTLP, yet
    sent) would fail the whole document when its field is new, so mixed numbers become
    doubles and any other mix becomes strings.
    """
    return _value(value, uniform=True)


def _uniform(values: list[Any]) -> list[Any]:
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1:
        return values
    if kinds <= {int, float}:
        return [None if v is None else float(v) for v in values]
    return [v if isinstance(v, str) or v is None else orjson.dumps(v).decode() for v in values]


def _value(value: Any, *, uniform: bool = False) -> Any:
    """An AnyValue as JSON: bytes as base64, non-finite doubles as strings, maps as objects;
    with *uniform*, every array's members of one type (see _attribute)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return _double(value.double_value)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value, uniform=uniform) for kv in value.kvlist_value.values}
    if kind == "array_value":
        values = [_value(v, uniform=uniform) for v in value.array_value.values]
        return _uniform(values) if uniform else values
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def _double(number: float) -> float | str:
    # JSON has no NaN or infinities; their names keep the value (indexed as malformed).
    if math.isfinite(number):
        return number
    return _NON_FINITE.get(number, "NaN")


def _body(value: Any) -> dict[str, Any] | None:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return {"text": value.string_value}
    if kind == "kvlist_value":
        return {"structured": {kv.key: _value(kv.value) for kv in value.kvlist_value.values}}
    if kind == "array_value":
        values = [_value(v) for v in value.array_value.values]
        # A flattened field holds objects: an array of maps is stored as it is, any other
        # array is wrapped, as the Collector does.
        if values and all(isinstance(v, dict) for v in values):
            return {"structured": values}
        return {"structured": {"value": values}}
    scalar = _value(value)
    if isinstance(scalar, bool):
        return {"text": "true" if scalar else "false"}
    return {"text": str(scalar)}
