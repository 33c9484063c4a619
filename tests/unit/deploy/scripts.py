"""deploy/'s Python scripts (not a package) loaded as modules, for their unit tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def load_script(name: str) -> ModuleType:
    """deploy/<name>.py as the module *name*."""
    spec = importlib.util.spec_from_file_location(name, DEPLOY / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
