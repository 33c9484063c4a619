"""docs/configuration.md documents every configuration key, so the reference cannot drift.

A key counts as documented when the page names it in full (`sinks.timescale.writers`) or in
the first column of a table whose header, or the heading above it, gives its section
(`| key (`receivers.http`) |` or `### Keys (`sinks.elasticsearch`)`).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from ingestd import config
from ingestd.config import Config

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
_PREFIX = re.compile(r"\(`([a-z_.]+)`\)")
_NAME = re.compile(r"`([a-z_.][a-z0-9_.]*)`")


def leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(leaf_keys(annotation, f"{path}."))
        else:
            keys.append(path)
    return keys


def documented(text: str) -> set[str]:
    names = set(_NAME.findall(text))
    heading_prefix = ""
    table_prefix: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            found = _PREFIX.search(line)
            heading_prefix = found.group(1) if found else ""
            continue
        if not line.startswith("|"):
            table_prefix = None
            continue
        first = line.split("|")[1]
        if table_prefix is None:  # the header row
            found = _PREFIX.search(first)
            table_prefix = found.group(1) if found else heading_prefix
            continue
        previous = ""
        for name in _NAME.findall(first):
            if name.startswith("."):  # `tls.cert_file`, `.key_file`
                name = previous.rpartition(".")[0] + name
            elif previous.count(".") > 1 and "." not in name:  # `pool.min_size` / `max_size`
                name = f"{previous.rpartition('.')[0]}.{name}"
            previous = name
            names.add(f"{table_prefix}.{name}" if table_prefix else name)
    return names


def test_every_config_key_is_in_the_reference() -> None:
    """Each leaf key of the config tree is documented in docs/configuration.md."""
    known = documented(REFERENCE.read_text(encoding="utf-8"))
    missing = [key for key in leaf_keys(Config) if key not in known]
    assert missing == []


def test_the_readme_minimal_config_is_valid() -> None:
    """The YAML block of README.md, "A minimal config", loads with its three addresses set."""
    readme = REFERENCE.parents[1] / "README.md"
    section = readme.read_text(encoding="utf-8").split("\n## A minimal config\n", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    loaded = config.parse(
        block,
        environ={
            "INGESTD_PG_DSN": "postgresql://ingestd@db:5432/deep_eyes",
            "INGESTD_ES_URL": "http://es:9200",
            "INGESTD_REDIS_URL": "redis://redis:6379/0",
        },
    )
    assert loaded.sinks.timescale.dsn == "postgresql://ingestd@db:5432/deep_eyes"
    assert loaded.sinks.elasticsearch.urls == ["http://es:9200"]
