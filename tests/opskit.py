"""The operations kit as tests read it: dashboard queries, alert rules, and the Prometheus tools.

Shared by tests/unit/deploy/test_ops_kit.py (promtool) and
tests/integration/test_prometheus.py (a real Prometheus scraping a running ingestd).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "ingestd.json"
RULES = ROOT / "deploy" / "prometheus" / "ingestd-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "ingestd-rules.test.yaml"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# What Grafana puts in for the dashboard's variables, for checking and evaluating its queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}


def dashboard_queries() -> list[str]:
    """Every panel query, then every template variable's query (label_values(...))."""
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return queries + [v["definition"] for v in board["templating"]["list"] if "definition" in v]


def rule_queries() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def rule_test_series() -> list[str]:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    return [s["series"] for t in tests["tests"] for s in t.get("input_series", [])]


def dashboard_recording_rules() -> dict[str, Any]:
    """The panel queries as a Prometheus rules file, one recording rule each."""
    rules = []
    for i, query in enumerate(dashboard_queries()):
        if query.startswith("label_values("):
            continue
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        rules.append({"record": f"ingestd:dashboard_query_{i}", "expr": query})
    return {"groups": [{"name": "dashboard", "rules": rules}]}


def prometheus_tool(name: str) -> str:
    """promtool or prometheus: on PATH, or where deploy/tools.sh puts them (`make tools`)."""
    cached = Path(os.environ.get("INGESTD_CACHE_DIR", "/var/cache/ingestd")) / "bin" / name
    found = shutil.which(name) or (str(cached) if cached.exists() else None)
    if found:
        return found
    message = f"{name} is not installed (`make tools` takes it from Debian's prometheus package)"
    if ON_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
