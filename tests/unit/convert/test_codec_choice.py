"""The codec setting: ingest.codec, INGESTD_CODEC overriding it, and the fallback of auto."""

from __future__ import annotations

import pytest

from ingestd.convert import native
from ingestd.errors import ConfigError


def test_env_overrides_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """INGESTD_CODEC=python wins over ingest.codec=native and says so."""
    monkeypatch.setenv("INGESTD_CODEC", "python")
    assert native.resolve("native") == ("python", "INGESTD_CODEC=python")


def test_unknown_codec_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt codec names the setting and the choices."""
    monkeypatch.setenv("INGESTD_CODEC", "rust")
    with pytest.raises(ConfigError, match="INGESTD_CODEC: must be one of native, python, auto"):
        native.resolve("auto")


def test_auto_falls_back_and_native_refuses_without_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without ingestd_native, auto resolves to python and native is a startup error."""
    monkeypatch.delenv("INGESTD_CODEC", raising=False)
    monkeypatch.setattr(native, "_native", None)
    monkeypatch.setattr(native, "IMPORT_ERROR", "No module named 'ingestd_native'")
    codec, why = native.resolve("auto")
    assert codec == "python"
    assert "ingestd_native missing" in why
    with pytest.raises(ConfigError, match="make venv"):
        native.resolve("native")
    assert "not installed" in native.describe()


def test_auto_picks_native_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the module importable, auto resolves to native."""
    monkeypatch.delenv("INGESTD_CODEC", raising=False)
    if not native.available():
        pytest.skip("ingestd_native is not built here")
    assert native.resolve("auto")[0] == "native"


def test_status_reports_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """/status shows the codec, why, the module version and the signals it converts."""
    from ingestd import daemon
    from ingestd.config import Config

    monkeypatch.setenv("INGESTD_CODEC", "python")
    status = daemon._codec_status(Config())
    assert status["codec"] == "python"
    assert status["reason"] == "INGESTD_CODEC=python"
    assert status["native_signals"] == []
