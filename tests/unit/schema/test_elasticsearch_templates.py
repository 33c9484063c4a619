"""The Elasticsearch templates' content and the retention fallback's rollover decision."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from elasticsearch import NotFoundError

from ingestd.config import ElasticsearchSinkConfig, LogsTemplateConfig
from ingestd.schema import files
from ingestd.schema.elasticsearch import (
    _needs_rollover,
    _with_hash,
    apply_templates,
    index_template,
    mappings,
    settings,
)

HOUR_MS = 3_600_000


def test_index_template_takes_the_configured_policy() -> None:
    """Pattern, priority above the built-ins, retention and replicas come from config."""
    config = LogsTemplateConfig(retention_days=7, replicas=1, priority=300)
    template = index_template(config)
    assert template["index_patterns"] == ["logs-*-*"]
    assert template["priority"] > 120  # Elastic's logs (100) and logs-otel (120)
    assert template["data_stream"] == {}
    assert template["template"]["lifecycle"] == {"data_retention": "7d"}
    index = settings(config)["index"]
    assert index["number_of_replicas"] == 1
    assert index["mapping"]["ignore_malformed"] is True
    assert index["mapping"]["total_fields"]["ignore_dynamic_beyond_limit"] is True


def test_mapping_fits_the_documents() -> None:
    """Nanosecond timestamps, full-text body, passthrough attributes at the three levels."""
    props = mappings()["properties"]
    assert props["@timestamp"]["type"] == "date_nanos"
    assert props["body"]["properties"]["text"]["type"] == "text"
    assert props["body"]["properties"]["structured"]["type"] == "flattened"
    assert props["attributes"]["type"] == "passthrough"
    assert props["scope"]["properties"]["attributes"]["type"] == "passthrough"
    assert props["resource"]["properties"]["attributes"]["type"] == "passthrough"
    assert props["message"] == {"type": "alias", "path": "body.text"}


def test_mapping_spends_nothing_the_documented_queries_do_not_use() -> None:
    """No norms on the body, no doc values on span/trace ids, observed time not indexed."""
    props = mappings()["properties"]
    # Full text still matches (positions kept for phrases); only length scoring goes.
    assert props["body"]["properties"]["text"] == {"type": "text", "norms": False}
    # Term lookups by id stay (indexed); no sort or aggregation on a value unique per record.
    for name in ("trace_id", "span_id"):
        assert props[name] == {"type": "keyword", "doc_values": False}
    # Range queries and sorting still work from doc values.
    assert props["observed_timestamp"] == {"type": "date_nanos", "index": False}
    # What the documented queries filter, sort and aggregate on keeps index and doc values.
    for name in ("@timestamp", "application_id", "severity_number"):
        assert "index" not in props[name]
        assert "doc_values" not in props[name]


def test_content_hash_is_stable_and_sensitive() -> None:
    """Same body, same hash (no rewrite); any change, another hash (an update)."""
    a = _with_hash({"template": {"x": 1, "y": [1, 2]}})[1]
    b = _with_hash({"template": {"y": [1, 2], "x": 1}})[1]
    c = _with_hash({"template": {"x": 2, "y": [1, 2]}})[1]
    assert a == b != c


def test_rollover_needs_documents_and_age_or_size() -> None:
    """An empty write index never rolls over; a full or old one does."""
    config = LogsTemplateConfig(rollover_max_age_h=24, rollover_max_primary_shard_gb=1)
    now = 1000 * 24 * HOUR_MS
    young = {"created_ms": now - HOUR_MS, "docs": 10, "primary_bytes": 10, "shards": 1}
    assert not _needs_rollover(young, config, now)
    assert _needs_rollover({**young, "created_ms": now - 25 * HOUR_MS}, config, now)
    assert not _needs_rollover({**young, "created_ms": now - 25 * HOUR_MS, "docs": 0}, config, now)
    assert _needs_rollover({**young, "primary_bytes": 2 * 1024**3}, config, now)
    assert not _needs_rollover({**young, "primary_bytes": 2 * 1024**3, "shards": 4}, config, now)
    assert not _needs_rollover(None, config, now)


def test_defaults_are_the_json_files_overlaid_by_config() -> None:
    """schema/elasticsearch/*.json are the defaults; config replaces shards and retention only."""
    shipped = files.read_json("elasticsearch", "ingestd-logs.json")
    default = index_template(LogsTemplateConfig())
    assert default == shipped
    changed = index_template(LogsTemplateConfig(retention_days=3))
    assert changed["template"]["lifecycle"]["data_retention"] == "3d"
    assert {k: v for k, v in changed.items() if k != "template"} == {
        k: v for k, v in shipped.items() if k != "template"
    }
    body = files.read_json("elasticsearch", "ingestd-logs@settings.json")
    assert settings(LogsTemplateConfig()) == body["template"]["settings"]
    assert settings(LogsTemplateConfig(shards=3))["index"]["number_of_shards"] == 3


def test_server_modules_choose_leaner_field_types() -> None:
    """With mapper-extras the body is match_only_text, with constant-keyword the data_stream
    fields are constant_keyword; without them, the JSON's `text` and `keyword` stay."""
    shipped = files.read_json("elasticsearch", "ingestd-logs@mappings.json")
    assert mappings() == shipped["template"]["mappings"]
    lean = mappings(frozenset({"mapper-extras", "constant-keyword"}))
    assert lean["properties"]["body"]["properties"]["text"] == {"type": "match_only_text"}
    for name in ("type", "dataset", "namespace"):
        assert lean["properties"]["data_stream"]["properties"][name] == {"type": "constant_keyword"}
        assert mappings()["properties"]["data_stream"]["properties"][name]["type"] == "keyword"
    assert (
        lean["properties"]["attributes"]
        == shipped["template"]["mappings"]["properties"]["attributes"]
    )


class _FakeEs:
    """Just enough of AsyncElasticsearch for `apply_templates`: a node with *modules*, no
    templates stored yet (or the ones put), one logs data stream; records the rollovers."""

    def __init__(self, modules: list[str]) -> None:
        self.modules = modules
        self.stored: dict[str, dict[str, Any]] = {}
        self.rollovers: list[dict[str, Any]] = []
        self.nodes = SimpleNamespace(info=self._info)
        self.cluster = SimpleNamespace(
            get_component_template=self._getter("component_template"),
            put_component_template=self._put,
        )
        self.indices = SimpleNamespace(
            get_index_template=self._getter("index_template"),
            put_index_template=self._put,
            resolve_index=self._resolve,
            rollover=self._rollover,
        )

    async def _info(self, **_: Any) -> dict[str, Any]:
        node = {"version": "8.19.21", "modules": [{"name": m} for m in self.modules]}
        return {"nodes": {"n1": node}}

    def _getter(self, kind: str) -> Any:
        async def get(name: str) -> dict[str, Any]:
            if name not in self.stored:
                raise NotFoundError(404, "missing", {})
            return {f"{kind}s": [{kind: self.stored[name]}]}

        return get

    async def _put(self, name: str, **body: Any) -> None:
        self.stored[name] = body

    async def _resolve(self, **_: Any) -> dict[str, Any]:
        stream = {"name": "logs-a.otel-b", "backing_indices": [".ds-logs-a.otel-b-000001"]}
        return {"data_streams": [stream]}

    async def _rollover(self, **kwargs: Any) -> None:
        self.rollovers.append(kwargs)


@pytest.mark.parametrize(
    ("modules", "lazy"), [(["data-streams", "x-pack-ilm"], True), (["x-pack-core"], False)]
)
async def test_a_changed_template_reaches_existing_streams(modules: list[str], lazy: bool) -> None:
    """A changed template rolls the logs data streams over: lazily where the data-streams
    module carries lazy rollovers out, at once where it is missing (the flag would never act);
    an unchanged one rolls nothing."""
    es = _FakeEs(modules)
    sink = ElasticsearchSinkConfig()
    for _ in range(2):  # created, then unchanged: nothing to roll over
        steps = await apply_templates(sink, es)  # type: ignore[arg-type]
        assert es.rollovers == []
        assert all("rolled over" not in s and "lazy" not in s for s in steps)
    changed = ElasticsearchSinkConfig(templates=LogsTemplateConfig(total_fields_limit=4000))
    steps = await apply_templates(changed, es)  # type: ignore[arg-type]
    assert es.rollovers == [{"alias": "logs-a.otel-b", "lazy": lazy}]
    assert any(("lazy rollover" if lazy else "now (rolled over)") in s for s in steps)
