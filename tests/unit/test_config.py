"""The config file: loading, env expansion, and reporting every problem with its path."""

from __future__ import annotations

import pytest

from ingestd import config
from ingestd.errors import ConfigError


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.parse(text, environ=environ or {})
    return info.value.problems


def test_empty_file_gives_defaults() -> None:
    """An empty file is valid and every key takes its documented default."""
    cfg = config.parse("", environ={})
    assert cfg.receivers.grpc.endpoint == "0.0.0.0:4317"
    assert cfg.ingest.ack == "committed"
    assert cfg.sinks.timescale.batch.max_rows == 8192


def test_shipped_default_config_loads() -> None:
    """deploy/ingestd.yaml loads once the dev stack's env file variables are set."""
    env = {
        "INGESTD_PG_DSN": "postgresql://u:p@127.0.0.1:5432/deep_eyes",
        "INGESTD_ES_URL": "http://127.0.0.1:9200",
        "INGESTD_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    cfg = config.load("deploy/ingestd.yaml", environ=env)
    assert cfg.sinks.timescale.dsn == env["INGESTD_PG_DSN"]
    assert cfg.sinks.elasticsearch.urls == [env["INGESTD_ES_URL"]]


def test_unknown_key_is_reported_with_its_path() -> None:
    """A misspelt key is an error naming the full dotted path."""
    assert problems_of("sinks:\n  timescale:\n    writerz: 3\n") == [
        "sinks.timescale.writerz: unknown key"
    ]


def test_wrong_type_is_reported() -> None:
    """A value of the wrong type names the key and the expected type."""
    (problem,) = problems_of("sinks:\n  timescale:\n    writers: many\n")
    assert problem.startswith("sinks.timescale.writers: ")
    assert "integer" in problem


def test_bad_value_is_reported() -> None:
    """Out-of-range values and bad endpoints are refused with a reason."""
    (problem,) = problems_of("receivers:\n  grpc:\n    endpoint: localhost\n")
    assert problem.startswith("receivers.grpc.endpoint: ")
    assert "host:port" in problem


def test_cross_field_rule_is_reported() -> None:
    """A rule over two keys (pool max >= min) names the section and both values."""
    (problem,) = problems_of("sinks:\n  timescale:\n    pool: {min_size: 4, max_size: 2}\n")
    assert problem == "sinks.timescale.pool: max_size must be >= min_size (2 < 4)"


def test_missing_required_env_variable_is_reported() -> None:
    """A reference to an unset variable without a default is a problem at that key."""
    assert problems_of("redis:\n  url: ${env:NOPE}\n") == [
        "redis.url: environment variable NOPE is not set"
    ]


def test_every_problem_is_reported_at_once() -> None:
    """Several problems in one file come back together, not one per run."""
    text = (
        "receivers:\n  grpc: {endpoint: nope, bogus: 1}\n"
        "sinks:\n  timescale: {writers: 0}\n"
        "ingest: {ack: sometimes}\n"
        "redis: {url: '${env:MISSING}'}\n"
        "extra_section: {}\n"
    )
    problems = problems_of(text)
    paths = sorted(p.split(":", 1)[0] for p in problems)
    assert paths == [
        "extra_section",
        "ingest.ack",
        "receivers.grpc.bogus",
        "receivers.grpc.endpoint",
        "redis.url",
        "sinks.timescale.writers",
    ]


def test_env_expansion_with_and_without_default() -> None:
    """${env:VAR} takes the variable; ${env:VAR:-d} falls back to d; whole refs keep types."""
    text = (
        "sinks:\n  timescale:\n    dsn: postgresql://${env:PGUSER}@h/db\n"
        "    writers: ${env:WRITERS:-3}\n"
        "redis:\n  timeout_ms: ${env:REDIS_MS}\n"
    )
    cfg = config.parse(text, environ={"PGUSER": "alice", "REDIS_MS": "7"})
    assert cfg.sinks.timescale.dsn == "postgresql://alice@h/db"
    assert cfg.sinks.timescale.writers == 3
    assert cfg.redis.timeout_ms == 7


def test_env_default_may_be_empty() -> None:
    """${env:VAR:-} is the empty string, as in the Collector."""
    cfg = config.parse("sinks:\n  elasticsearch:\n    username: ${env:U:-}\n", environ={})
    assert cfg.sinks.elasticsearch.username == ""


def test_byte_sizes_accept_units() -> None:
    """Byte-size keys take plain integers or units such as 8MiB."""
    cfg = config.parse("sinks:\n  timescale:\n    batch: {max_bytes: 2MiB}\n", environ={})
    assert cfg.sinks.timescale.batch.max_bytes == 2 * 1024 * 1024


def test_config_is_frozen() -> None:
    """A loaded config cannot be changed by a stage."""
    cfg = config.parse("", environ={})
    with pytest.raises(ValueError, match="frozen"):
        cfg.ingest.ack = "accepted"  # type: ignore[misc]


def test_redacted_masks_secrets() -> None:
    """print-config masks passwords in DSNs and secret-named keys."""
    cfg = config.parse(
        "sinks:\n  timescale: {dsn: 'postgresql://u:hunter2@h/db'}\n"
        "  elasticsearch: {password: hunter2, api_key: k}\n",
        environ={},
    )
    shown = config.redacted(cfg)
    assert shown["sinks"]["timescale"]["dsn"] == "postgresql://u:***@h/db"
    assert shown["sinks"]["elasticsearch"]["password"] == "***"
    assert shown["sinks"]["elasticsearch"]["api_key"] == "***"
    assert "hunter2" not in repr(shown)


def test_unreadable_file_is_a_config_error(tmp_path: object) -> None:
    """A missing file is reported as a config problem, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        config.load("/nonexistent/ingestd.yaml")


def test_not_a_mapping_is_refused() -> None:
    """A file whose top level is a list is refused with a clear line."""
    assert problems_of("- a\n- b\n") == ["<config>: the top level must be a mapping of sections"]


def test_schema_and_maintenance_defaults() -> None:
    """The schema section defaults to the Deep Eyes document's intervals."""
    cfg = config.parse("", environ={})
    assert cfg.schema.tier == "auto"
    assert (cfg.schema.metrics.retention_days, cfg.schema.traces.retention_days) == (365, 30)
    assert (cfg.schema.metrics.compress_after_days, cfg.schema.traces.compress_after_days) == (
        30,
        7,
    )
    assert cfg.schema.ledger_retention_s == 900
    assert cfg.maintenance.enabled


def test_one_table_override_keeps_that_tables_other_defaults() -> None:
    """Setting traces.retention_days leaves traces' own chunk interval default (not metrics')."""
    cfg = config.parse("schema:\n  traces: {retention_days: 14}\n", environ={})
    assert cfg.schema.traces.retention_days == 14
    assert cfg.schema.traces.chunk_interval_hours == 6


def test_partitions_ahead_must_cover_the_future_skew() -> None:
    """Partitions ahead shorter than ingest.max_future_skew_s is refused with both values."""
    assert problems_of("schema: {partitions_ahead_hours: 12}\n") == [
        "schema.partitions_ahead_hours: must cover ingest.max_future_skew_s (43200 s < 86400 s)"
    ]
    config.parse("schema: {partitions_ahead_hours: 12}\ningest: {max_future_skew_s: 3600}\n")


def test_application_keys_need_the_timescale_sink() -> None:
    """Application keys without the Timescale sink are refused: the keys live in its database."""
    text = (
        "auth: {enabled: true, application_keys: {enabled: true}}\n"
        "sinks: {timescale: {enabled: false}}\n"
    )
    assert problems_of(text) == [
        "auth.application_keys.enabled: needs sinks.timescale.enabled (application keys live"
        " in the Timescale sink's database, sinks.timescale.dsn)"
    ]
    config.parse("auth: {enabled: true, application_keys: {enabled: true}}\n")
    config.parse("sinks: {timescale: {enabled: false}}\n")


def test_rules_across_sections_are_reported_with_the_other_problems() -> None:
    """A rule across sections is still checked when another section fails, so all come at once."""
    text = (
        "auth: {enabled: true, application_keys: {enabled: true}}\n"
        "sinks: {timescale: {enabled: false}}\n"
        "receivers: {grpc: {endpoint: nope}}\n"
        "schema: {partitions_ahead_hours: 12}\n"
    )
    paths = sorted(p.split(":", 1)[0] for p in problems_of(text))
    assert paths == [
        "auth.application_keys.enabled",
        "receivers.grpc.endpoint",
        "schema.partitions_ahead_hours",
    ]


def test_a_rule_is_not_checked_against_a_section_that_failed() -> None:
    """A failing section is not judged by its defaults: only its own problem is reported."""
    text = "auth: {enabled: true, application_keys: {enabled: true}}\nsinks: {timescale: 1}\n"
    (problem,) = problems_of(text)
    assert problem.startswith("sinks.timescale: ")


def test_grpc_tls_min_version_other_than_1_2_is_refused() -> None:
    """grpcio's server cannot enforce a minimum TLS version: config says so, not pretends."""
    with pytest.raises(ConfigError, match="grpcio's server cannot set a minimum TLS version"):
        config.parse("receivers:\n  grpc:\n    tls:\n      min_version: '1.3'\n", environ={})
    cfg = config.parse("receivers:\n  http:\n    tls:\n      min_version: '1.3'\n", environ={})
    assert cfg.receivers.http.tls.min_version == "1.3"


def test_admin_metrics_token_needs_a_token() -> None:
    """admin.metrics_need_token without a token is refused (it would lock out Prometheus)."""
    with pytest.raises(ConfigError, match="metrics_need_token needs status_token"):
        config.parse("admin:\n  metrics_need_token: true\n", environ={})
