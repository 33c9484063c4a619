"""The `alerts` section: a bad rule is named by its dotted path, every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ingestd.config import parse
from ingestd.errors import ConfigError


def problems(alerts: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(yaml.safe_dump({"alerts": alerts}), environ={})
    return caught.value.problems


def test_every_bad_rule_is_named_with_its_path_at_once() -> None:
    """Unknown condition kind, aggregate, quantile range, template and severity, together."""
    found = problems(
        {
            "rules": [
                {"name": "a", "severity": "HIGH", "metrics": {"name": "x"}},
                {
                    "name": "b",
                    "severity": "HIGH",
                    "metric": {"name": "x", "aggregate": "p99", "threshold": 1},
                },
                {
                    "name": "c",
                    "severity": "HIGH",
                    "metric": {
                        "name": "x",
                        "aggregate": "quantile",
                        "quantile": 1.5,
                        "threshold": 1,
                    },
                },
                {
                    "name": "d",
                    "severity": "HIGH",
                    "message": "{nope}",
                    "traces": {"measure": "error_ratio", "threshold": 0.1},
                },
                {"name": "e", "severity": "URGENT", "logs": {"threshold": 1}},
            ]
        }
    )
    assert found[0] == "alerts.rules[0].metrics: unknown key"
    assert found[1].startswith("alerts.rules[1].metric.aggregate: Input should be 'avg'")
    assert found[2] == "alerts.rules[2].metric.quantile: Input should be less than or equal to 1"
    assert found[3].startswith("alerts.rules[3].message: bad template (KeyError: 'nope')")
    assert found[4].startswith("alerts.rules[4].severity: Input should be 'INFO'")
    assert len(found) == 5


def test_conditions_and_references_are_checked() -> None:
    """No condition, two conditions, a quantile without its aggregate, unknown receivers."""
    found = problems(
        {
            "receivers": [{"name": "hook", "url": "http://x/hook"}],
            "default_receiver": "nope",
            "rules": [
                {"name": "a", "severity": "LOW"},
                {
                    "name": "b",
                    "severity": "LOW",
                    "logs": {"threshold": 1},
                    "traces": {"measure": "error_ratio", "threshold": 1},
                },
                {
                    "name": "c",
                    "severity": "LOW",
                    "metric": {"name": "x", "aggregate": "avg", "quantile": 0.5, "threshold": 1},
                },
            ],
        }
    )
    assert found == [
        "alerts.rules[0]: needs exactly one condition of metric, traces, logs (got [])",
        "alerts.rules[1]: needs exactly one condition of metric, traces, logs"
        " (got ['traces', 'logs'])",
        "alerts.rules[2].metric: quantile is only for aggregate quantile, not avg",
    ]
    (reference,) = problems(
        {
            "receivers": [{"name": "hook", "url": "http://x/hook"}],
            "default_receiver": "nope",
            "rules": [
                {"name": "a", "severity": "LOW", "receiver": "gone", "logs": {"threshold": 1}}
            ],
        }
    )
    assert "default_receiver: no receiver named 'nope'" in reference
    assert "rules[0].receiver: no receiver named 'gone'" in reference


def test_a_valid_rule_parses_with_defaults() -> None:
    """A minimal metric rule gets the documented defaults."""
    config = parse(
        yaml.safe_dump(
            {
                "alerts": {
                    "enabled": True,
                    "rules": [
                        {
                            "name": "HighCpu",
                            "severity": "HIGH",
                            "metric": {"name": "cpu", "aggregate": "rate", "threshold": 1},
                        }
                    ],
                }
            }
        ),
        environ={},
    ).alerts
    (rule,) = config.rules
    assert rule.kind == "metric"
    assert (rule.for_s, rule.keep_firing_for_s, rule.no_data) == (0.0, 0.0, "resolve")
    assert config.rule_interval_s(rule) == 60.0
    assert config.receiver_of(rule) is None


def test_alerts_need_the_timescale_sink() -> None:
    """Enabled alerts without PostgreSQL (sink off or discarding) are refused at load."""
    for sink in ("{enabled: false}", "{discard: true}"):
        with pytest.raises(ConfigError, match=r"alerts\.enabled: needs sinks\.timescale"):
            parse(f"alerts: {{enabled: true}}\nsinks: {{timescale: {sink}}}", environ={})


def test_the_documented_example_config_is_valid() -> None:
    """The example of docs/alerts.md parses, with its five rules of the three kinds."""
    page = Path(__file__).resolve().parents[3] / "docs" / "alerts.md"
    example = page.read_text(encoding="utf-8").split("```yaml\n", 1)[1].split("```", 1)[0]
    section = parse(example, environ={}).alerts
    assert [r.kind for r in section.rules] == ["metric", "metric", "traces", "traces", "logs"]
    assert section.receiver_of(section.rules[1]) == section.receivers[1]


def test_logs_rules_need_the_elasticsearch_sink() -> None:
    """A logs rule with Elasticsearch off is refused with its path."""
    text = (
        "alerts: {enabled: true, rules: [{name: a, severity: LOW, logs: {threshold: 1}}]}\n"
        "sinks: {elasticsearch: {enabled: false}}"
    )
    with pytest.raises(ConfigError, match=r"alerts\.rules\[0\]\.logs: needs sinks\.elasticsearch"):
        parse(text, environ={})
