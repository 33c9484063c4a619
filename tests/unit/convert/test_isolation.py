"""The pure converters and decoders load only the shared vocabulary, never the orchestrator."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_HEAVY = ("redis", "prometheus_client", "pydantic", "structlog", "grpc", "aiohttp")


def _loaded_after(*modules: str) -> tuple[set[str], set[str]]:
    """The ingestd modules and heavy third-party packages a fresh interpreter holds after
    importing *modules*."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out))
    ours = {m for m in loaded if m == "ingestd" or m.startswith("ingestd.")}
    heavy = {m for m in _HEAVY if m in loaded}
    return ours, heavy


def test_converters_load_only_convert_model_and_errors() -> None:
    """Importing the three converters loads convert/*, model and errors and nothing else."""
    ours, heavy = _loaded_after(
        "ingestd.convert.traces", "ingestd.convert.metrics", "ingestd.convert.logs"
    )
    allowed = {"ingestd", "ingestd.convert", "ingestd.model", "ingestd.errors"}
    assert {m for m in ours if not m.startswith("ingestd.convert.")} <= allowed
    assert {"ingestd.convert.traces", "ingestd.convert.metrics", "ingestd.model"} <= ours
    assert heavy == set()


@pytest.mark.parametrize("module", ["ingestd.receiver.decode", "ingestd.receiver.otlp_json"])
def test_decoders_do_not_load_the_orchestrator(module: str) -> None:
    """The OTLP decoders need the wire classes and the vocabulary, not ingest or the sinks."""
    ours, heavy = _loaded_after(module)
    forbidden = {"ingest", "batching", "state", "sinks", "metrics", "config", "daemon"}
    assert {m.split(".")[1] for m in ours if "." in m} & forbidden == set()
    assert heavy == set()
