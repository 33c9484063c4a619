"""docs/operations.md's metrics table lists exactly the metrics ingestd exports, with their types.

"Exports" is both what `ingestd/observe/metrics.py` declares and what the Prometheus registry
holds once a daemon is built (a library or a stage registering its own metric at runtime would
show there).
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import ingestd.observe.metrics
from ingestd import config
from ingestd.daemon import build

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
_ROW = re.compile(r"^\| `([a-z_:][a-z0-9_:]*)` \| (counter|gauge|histogram|summary) \|")


def docs_table() -> dict[str, str]:
    """name -> type, from the table under `## Metrics` in docs/operations.md."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Metrics\n", 1)[1]
    section = section.split("\n#", 1)[0]
    return {m.group(1): m.group(2) for line in section.splitlines() if (m := _ROW.match(line))}


def exposed_name(name: str, kind: str) -> str:
    return f"{name}_total" if kind == "counter" else name


def declared() -> dict[str, str]:
    return {
        exposed_name(metric._name, metric._type): metric._type
        for metric in vars(ingestd.observe.metrics).values()
        if isinstance(metric, MetricWrapperBase)
    }


def registered() -> dict[str, str]:
    build(config.parse("redis: {enabled: false}"))
    return {exposed_name(f.name, f.type): f.type for f in REGISTRY.collect()}


def test_every_declared_metric_is_in_the_docs_table() -> None:
    """Each metric of ingestd/observe/metrics.py has a row with its type in docs/operations.md."""
    table = docs_table()
    wrong = {name: kind for name, kind in declared().items() if table.get(name) != kind}
    assert wrong == {}


def test_every_registered_metric_is_in_the_docs_table() -> None:
    """Each metric the registry exports after building a daemon has a docs/operations.md row."""
    table = docs_table()
    wrong = {name: kind for name, kind in registered().items() if table.get(name) != kind}
    assert wrong == {}


def test_every_docs_row_is_a_declared_metric() -> None:
    """No docs/operations.md row names a metric that ingestd does not declare."""
    known = declared()
    stale = sorted(name for name in docs_table() if name not in known)
    assert stale == []
    assert len(docs_table()) >= 60  # the table was found and parsed


def test_gauges_say_how_workers_combine() -> None:
    """Every gauge has a live multiprocess mode, so a dead worker's value disappears."""
    modes = {
        metric._name: metric._multiprocess_mode
        for metric in vars(ingestd.observe.metrics).values()
        if isinstance(metric, MetricWrapperBase) and metric._type == "gauge"
    }
    assert modes
    assert {name: mode for name, mode in modes.items() if not mode.startswith("live")} == {}
