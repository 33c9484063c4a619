"""The image's and the Kubernetes config files differ in exactly the keys docs/deployment.md lists.

docs/deployment.md ("The two config files") names each key in which deploy/k8s/config/ingestd.yaml
departs from deploy/container/ingestd.yaml; a new difference must be documented there first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ingestd import config

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
IMAGE = DEPLOY / "container" / "ingestd.yaml"
KUBERNETES = DEPLOY / "k8s" / "config" / "ingestd.yaml"
ENVIRON = {
    "INGESTD_PG_DSN": "postgresql://ingestd@db:5432/ingestd",
    "INGESTD_ES_URL": "http://es:9200",
    "INGESTD_REDIS_URL": "redis://redis:6379/0",
}

# The rows of the table in docs/deployment.md, "The two config files".
DOCUMENTED = {
    "workers",
    "telemetry.log_level",
    "shutdown.grace_s",
    "memory.max_buffered_bytes",
    "memory.max_rss_mib",
}


def leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of a YAML mapping."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    found: dict[str, Any] = {}
    for key, value in tree.items():
        found.update(leaves(value, f"{prefix}{key}."))
    return found


def test_the_two_files_differ_in_the_documented_keys_only() -> None:
    """Every key set differently in the two files is one the deployment page lists."""
    image = leaves(yaml.safe_load(IMAGE.read_text(encoding="utf-8")))
    kubernetes = leaves(yaml.safe_load(KUBERNETES.read_text(encoding="utf-8")))
    differing = {
        key for key in image.keys() | kubernetes.keys() if image.get(key) != kubernetes.get(key)
    }
    assert differing == DOCUMENTED


def test_the_documented_page_names_every_differing_key() -> None:
    """docs/deployment.md names each key of the list, so the test and the page agree."""
    page = (DEPLOY.parent / "docs" / "deployment.md").read_text(encoding="utf-8")
    section = page.split("**The two config files.**", 1)[1].split("```", 1)[0]
    assert [key for key in sorted(DOCUMENTED) if f"`{key}`" not in section] == []


def test_both_files_are_valid_with_the_same_environment() -> None:
    """Both files load with the same three addresses and agree on them."""
    image = config.load(IMAGE, environ=ENVIRON)
    kubernetes = config.load(KUBERNETES, environ=ENVIRON)
    assert image.sinks.timescale.dsn == kubernetes.sinks.timescale.dsn == ENVIRON["INGESTD_PG_DSN"]
    assert image.redis.url == kubernetes.redis.url == ENVIRON["INGESTD_REDIS_URL"]
