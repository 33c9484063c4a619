"""The Elasticsearch templates' content and the retention fallback's rollover decision."""

from __future__ import annotations

from ingestd.config import LogsTemplateConfig
from ingestd.schema import files
from ingestd.schema.elasticsearch import (
    _needs_rollover,
    _with_hash,
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
    """With mapper-extras the body is match_only_text; without it, the JSON's `text` stays."""
    shipped = files.read_json("elasticsearch", "ingestd-logs@mappings.json")
    assert mappings() == shipped["template"]["mappings"]
    lean = mappings(frozenset({"mapper-extras"}))
    assert lean["properties"]["body"]["properties"]["text"] == {"type": "match_only_text"}
    assert (
        lean["properties"]["attributes"]
        == shipped["template"]["mappings"]["properties"]["attributes"]
    )
