"""The codec setting: ingest.codec, INGESTD_CODEC overriding it, and the fallback of auto."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from ingestd.convert import native
from ingestd.errors import ConfigError
from ingestd.model import Signal


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


def _routes(monkeypatch: pytest.MonkeyPatch, codec: str, yaml: str = "") -> dict[Any, Any]:
    from ingestd import config
    from ingestd.daemon import build

    monkeypatch.setenv("INGESTD_CODEC", codec)
    return dict(build(config.parse("redis: {enabled: false}\n" + yaml)).ingest.routes)


def test_native_codec_converts_all_three_signals_under_the_default_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """codec native: traces and metrics native (one thread-safe converter for small and large
    requests, the configured bucket cap); logs routed by attributes (the default) native too,
    admitted by the process's one policy, and /status says so."""
    from ingestd import daemon
    from ingestd.config import Config

    if not native.available():
        pytest.skip("ingestd_native is not built here")
    routes = _routes(monkeypatch, "native", "ingest: {max_buckets_per_point: 7}")
    for signal in (Signal.TRACES, Signal.METRICS):
        route = routes[signal]
        assert isinstance(route.convert, native.NATIVE_CONVERTERS[signal])
        assert route.convert_large is route.convert
        assert route.convert.limits.max_buckets_per_point == 7
    logs = routes[Signal.LOGS]
    assert isinstance(logs.convert, native.NativeLogsConverter)
    assert logs.convert_large is logs.convert
    request = logs_service_pb2.ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=1)
    record.attributes.add(key="data_stream.dataset").value.string_value = "Shop"
    out = logs.convert(request.SerializeToString())
    assert b'"_index":"logs-shop.otel-default"' in out.payload.data
    assert logs.convert._reference.routes.status()["routes"] == 1
    status = daemon._codec_status(Config())
    assert status["native_signals"] == ["traces", "metrics", "logs"]


def test_native_logs_when_not_routed_by_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    """routing.from_attributes off: logs native; a registered application's request goes to
    its own namespace."""
    if not native.available():
        pytest.skip("ingestd_native is not built here")
    yaml = "sinks: {elasticsearch: {routing: {from_attributes: false}}}"
    convert = _routes(monkeypatch, "native", yaml)[Signal.LOGS].convert
    assert isinstance(convert, native.NativeLogsConverter)
    request = logs_service_pb2.ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=1)
    body = request.SerializeToString()
    plain = convert(body)
    registered = convert(body, "de_alpha")
    assert b"logs-generic.otel-default" in plain.payload.data
    assert b'"application_id":"de_alpha"' in b"".join(registered.payload)
    assert b"-de_alpha" in b"".join(registered.payload)


def test_python_codec_keeps_the_reference_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """codec python: the reference converters, a second instance for large requests."""
    for route in _routes(monkeypatch, "python").values():
        assert not getattr(route.convert, "takes_bytes", False)
        assert route.convert_large is not route.convert
