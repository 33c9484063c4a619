"""The Elasticsearch side of `ingestd schema apply`, and the retention fallback for maintenance.

`apply_templates` installs two component templates and one index template for the `logs-*-*`
data streams the bulk writer creates on first write (the document shape is in
convert/logs.py). Their defaults are the JSON files in schema/elasticsearch/, overlaid here
with the config (shards, replicas, retention, ...) and the server's modules. It is idempotent:
a template whose content (hashed into its `_meta`) is unchanged is left alone.

Elasticsearch enforces `lifecycle.data_retention` only where its data-streams module runs (the
data stream lifecycle service). Where it does not (the dev stack's integ-test zip),
`enforce_retention` does the same from ingestd's maintenance job: roll over write indices older
than `rollover_max_age_h`, delete backing indices whose data is older than `retention_days`.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from elasticsearch import AsyncElasticsearch, NotFoundError

from ingestd.config import ElasticsearchSinkConfig, LogsTemplateConfig
from ingestd.schema import files
from ingestd.sinks.elasticsearch import make_client

log = structlog.get_logger("ingestd.schema.elasticsearch")

INDEX_TEMPLATE = "ingestd-logs"
SETTINGS_TEMPLATE = "ingestd-logs@settings"
MAPPINGS_TEMPLATE = "ingestd-logs@mappings"
# Yours to fill (extra mappings or settings); applied last, may be absent.
CUSTOM_TEMPLATE = "ingestd-logs@custom"
LOGS_PATTERN = "logs-*-*"
# The data stream lifecycle service lives in this module; passthrough objects need 8.13.
_LIFECYCLE_MODULE = "data-streams"
# Not used by ingestd's templates, but its absence is worth saying: no ILM policy can take over.
_ILM_MODULE = "x-pack-ilm"
_MIN_VERSION = (8, 13)

# The defaults, one JSON file per template in schema/elasticsearch/ (named like the template),
# so that a user can read them or install them with curl. The reasons behind the mapping are
# in schema/README.md.
_DEFAULTS = "elasticsearch"
# Server modules that let the mapping use a leaner field type where the default JSON keeps a
# portable one: (module, path of the field in `properties`, mapping used with the module).
# match_only_text indexes no positions (about 10 % less disk for logs, Elastic's logs default);
# constant_keyword stores the data stream's one value in the mapping, so the three data_stream
# fields cost no indexing per document (Elastic's data stream templates use it). The dev
# stack's integ-test zip has neither module and keeps `text` and `keyword`.
CAPABILITY_OVERLAYS: tuple[tuple[str, tuple[str, ...], dict[str, Any]], ...] = (
    ("mapper-extras", ("body", "text"), {"type": "match_only_text"}),
    ("constant-keyword", ("data_stream", "type"), {"type": "constant_keyword"}),
    ("constant-keyword", ("data_stream", "dataset"), {"type": "constant_keyword"}),
    ("constant-keyword", ("data_stream", "namespace"), {"type": "constant_keyword"}),
)


def mappings(modules: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The logs document mapping (the Collector's `otel` mode) from
    schema/elasticsearch/ingestd-logs@mappings.json, with the leaner field types the server's
    *modules* allow (CAPABILITY_OVERLAYS)."""
    body = files.read_json(_DEFAULTS, f"{MAPPINGS_TEMPLATE}.json")
    mapping: dict[str, Any] = body["template"]["mappings"]
    for module, path, field in CAPABILITY_OVERLAYS:
        if module in modules:
            _field(mapping, path).clear()
            _field(mapping, path).update(field)
    return mapping


def _field(mapping: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = mapping
    for name in path:
        node = node["properties"][name]
    return node


def settings(config: LogsTemplateConfig) -> dict[str, Any]:
    """schema/elasticsearch/ingestd-logs@settings.json with the configured shards, replicas,
    refresh interval and field limit."""
    body = files.read_json(_DEFAULTS, f"{SETTINGS_TEMPLATE}.json")
    index: dict[str, Any] = body["template"]["settings"]["index"]
    index["number_of_shards"] = config.shards
    index["number_of_replicas"] = config.replicas
    index["refresh_interval"] = f"{config.refresh_interval_s}s"
    index["mapping"]["total_fields"]["limit"] = config.total_fields_limit
    return {"index": index}


def index_template(config: LogsTemplateConfig) -> dict[str, Any]:
    """schema/elasticsearch/ingestd-logs.json with the configured priority and retention."""
    body = files.read_json(_DEFAULTS, f"{INDEX_TEMPLATE}.json")
    body["priority"] = config.priority
    body["template"]["lifecycle"]["data_retention"] = f"{config.retention_days}d"
    return body


async def apply_templates(
    config: ElasticsearchSinkConfig, client: AsyncElasticsearch | None = None
) -> list[str]:
    """Install the logs templates; return one line per step. Idempotent.

    Raises RuntimeError when the server is too old for the mapping (passthrough needs 8.13).
    Uses *client* if given (not closed), else a client made from *config* (closed).
    """
    own = client is None
    es = make_client(config) if client is None else client
    try:
        return await _apply(config, es)
    finally:
        if own:
            await es.close()


async def _apply(config: ElasticsearchSinkConfig, es: AsyncElasticsearch) -> list[str]:
    steps: list[str] = []
    node = await _local_node(es)
    version = tuple(int(p) for p in node["version"].split(".")[:2])
    if version < _MIN_VERSION:
        raise RuntimeError(
            f"Elasticsearch {node['version']} is too old for the logs mapping "
            f"(passthrough objects need {'.'.join(map(str, _MIN_VERSION))})"
        )
    templates = config.templates
    changed = False
    modules = _module_names(node)
    for name, body in (
        (SETTINGS_TEMPLATE, {"template": {"settings": settings(templates)}}),
        (MAPPINGS_TEMPLATE, {"template": {"mappings": mappings(frozenset(modules))}}),
    ):
        outcome = await _put_template(es, "component_template", name, body)
        changed |= outcome == "updated"
        steps.append(f"elasticsearch: component template {name}: {outcome}")
    outcome = await _put_template(es, "index_template", INDEX_TEMPLATE, index_template(templates))
    changed |= outcome == "updated"
    steps.append(
        f"elasticsearch: index template {INDEX_TEMPLATE} ({LOGS_PATTERN}, priority "
        f"{templates.priority}, retention {templates.retention_days}d): {outcome}"
    )
    if changed:
        # A lazy rollover is carried out on the next write by the data-streams module; where
        # it is missing (the dev stack), the flag is set and never acted on, so the streams
        # would keep the old mapping for good: roll them over now instead.
        lazy = _LIFECYCLE_MODULE in modules
        rolled = await _roll_over(es, lazy=lazy)
        when = "at their next write (lazy rollover)" if lazy else "now (rolled over)"
        steps.append(
            f"elasticsearch: {rolled} existing logs data streams take the new templates {when}"
        )
    if _LIFECYCLE_MODULE not in modules:
        missing = [m for m in (_LIFECYCLE_MODULE, _ILM_MODULE) if m not in modules]
        log.warning(
            "es_lifecycle_not_enforced",
            version=node["version"],
            missing_modules=missing,
            detail="ingestd's maintenance job enforces the retention instead",
            retention_days=templates.retention_days,
        )
        steps.append(
            f"elasticsearch: this server has no data stream lifecycle service (missing "
            f"modules: {', '.join(missing)}): retention ({templates.retention_days}d) is "
            f"enforced by ingestd's maintenance job instead"
        )
    return steps


async def _local_node(es: AsyncElasticsearch) -> dict[str, Any]:
    # `GET /` is not served by every distribution (the integ-test zip answers 405).
    # The `plugins` metric lists the modules too.
    answer = await es.nodes.info(node_id="_local", metric="plugins")
    node: dict[str, Any] = next(iter(answer["nodes"].values()))
    return node


def _module_names(node: dict[str, Any]) -> set[str]:
    return {m["name"] for m in node.get("modules", ())} | {
        p["name"] for p in node.get("plugins", ())
    }


def _with_hash(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    meta = {"managed_by": "ingestd", "content_hash": digest}
    return {**body, "_meta": meta}, digest


async def _put_template(es: AsyncElasticsearch, kind: str, name: str, body: dict[str, Any]) -> str:
    """Puts a template (kind: component_template or index_template) unless the stored one
    carries the same content hash; returns created, updated or unchanged."""
    full, digest = _with_hash(body)
    get: Callable[..., Awaitable[Any]]
    put: Callable[..., Awaitable[Any]]
    if kind == "component_template":
        get, put = es.cluster.get_component_template, es.cluster.put_component_template
    else:
        get, put = es.indices.get_index_template, es.indices.put_index_template
    try:
        current = await get(name=name)
        meta = current[f"{kind}s"][0][kind].get("_meta") or {}
    except NotFoundError:
        meta = None
    if meta is not None and meta.get("content_hash") == digest:
        return "unchanged"
    await put(name=name, **full)
    return "created" if meta is None else "updated"


async def _roll_over(es: AsyncElasticsearch, *, lazy: bool) -> int:
    streams = await _data_streams(es, LOGS_PATTERN)
    for name in streams:
        await es.indices.rollover(alias=name, lazy=lazy)
    return len(streams)


async def _data_streams(es: AsyncElasticsearch, pattern: str) -> dict[str, list[str]]:
    """Data stream name -> backing indices, oldest generation first."""
    # GET _data_stream needs the data-streams module; _resolve/index is in the server core.
    answer = await es.indices.resolve_index(name=pattern, expand_wildcards="all")
    return {
        ds["name"]: sorted(ds["backing_indices"], key=_generation)
        for ds in answer.get("data_streams", ())
    }


def _generation(index: str) -> int:
    tail = index.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def enforce_retention(
    config: ElasticsearchSinkConfig,
    client: AsyncElasticsearch,
    *,
    pattern: str = LOGS_PATTERN,
    now_s: float | None = None,
) -> dict[str, Any]:
    """Do what the data stream lifecycle would: roll over, then delete expired backing indices.

    A write index is rolled over once it holds documents and is `rollover_max_age_h` old or
    its primary shards exceed `rollover_max_primary_shard_gb`. A backing index that is not
    the write index has received no writes since the next generation was created; it is
    deleted once that moment is `retention_days` past. The write index is never deleted.
    Returns what it did; a no-op (with `skipped`) where Elasticsearch enforces the lifecycle
    itself. *pattern* and *now_s* (epoch seconds) exist for tests.
    """
    node = await _local_node(client)
    if _LIFECYCLE_MODULE in _module_names(node):
        return {"skipped": "Elasticsearch enforces the data stream lifecycle itself"}
    templates = config.templates
    now_ms = (time.time() if now_s is None else now_s) * 1000
    streams = await _data_streams(client, pattern)
    stats = await _index_stats(client, pattern)

    rolled: list[str] = []
    for name, indices in streams.items():
        if indices and _needs_rollover(stats.get(indices[-1]), templates, now_ms):
            await client.indices.rollover(alias=name)
            rolled.append(name)
    if rolled:
        streams = await _data_streams(client, pattern)
        stats = await _index_stats(client, pattern)

    deleted: list[str] = []
    retention_ms = templates.retention_days * 86_400_000
    for indices in streams.values():
        # indices[i] stopped receiving writes when indices[i + 1] was created.
        for older, newer in itertools.pairwise(indices):
            created = stats.get(newer, {}).get("created_ms")
            if created is not None and now_ms - created > retention_ms:
                await client.indices.delete(index=older)
                deleted.append(older)
    result = {"data_streams": len(streams), "rolled_over": rolled, "deleted": deleted}
    if rolled or deleted:
        log.info("es_retention_enforced", **result)
    return result


def _needs_rollover(
    stats: dict[str, float] | None, config: LogsTemplateConfig, now_ms: float
) -> bool:
    if not stats or not stats["docs"]:
        return False  # an empty write index would only make another empty one
    too_old = now_ms - stats["created_ms"] >= config.rollover_max_age_h * 3_600_000
    per_shard = stats["primary_bytes"] / max(1, stats["shards"])
    return too_old or per_shard >= config.rollover_max_primary_shard_gb * 1024**3


async def _index_stats(es: AsyncElasticsearch, pattern: str) -> dict[str, dict[str, float]]:
    rows = await es.cat.indices(
        index=f".ds-{pattern}-*",
        h="index,creation.date,docs.count,pri.store.size,pri",
        bytes="b",
        format="json",
        expand_wildcards="all",
    )
    return {
        row["index"]: {
            "created_ms": float(row["creation.date"]),
            "docs": float(row["docs.count"] or 0),
            "primary_bytes": float(row["pri.store.size"] or 0),
            "shards": float(row["pri"] or 1),
        }
        for row in rows_of(rows)
    }


def rows_of(answer: Any) -> list[dict[str, str]]:
    """The rows of a `_cat` API answer asked with format=json."""
    rows: list[dict[str, str]] = answer.body
    return rows
