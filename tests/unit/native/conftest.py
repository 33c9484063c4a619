"""The differential suite needs the compiled codec: missing, it skips locally and fails in CI."""

from __future__ import annotations

import os

import pytest

from ingestd.convert import native


@pytest.fixture(autouse=True)
def _needs_native() -> None:
    if native.available():
        return
    message = f"ingestd_native is not installed ({native.IMPORT_ERROR}); run `make venv`"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
