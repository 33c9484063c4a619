"""Every conversion in these tests is also run through the native codec (when it is built):
the Python converters' own cases (hostile inputs included) must give byte-identical output."""

from __future__ import annotations

from typing import Any

import pytest

from ingestd.convert import copy_binary, logs, metrics, native, traces
from ingestd.convert.bulk import BulkItems
from ingestd.ingest import Converted


def _same(what: str, python: Converted, out: tuple[Any, ...], data: bytes) -> None:
    rejected, reasons, example = out[3], out[4], out[5]
    assert data == out[0], f"{what}: native bytes differ"
    assert (python.rejected, dict(python.reject_reasons)) == (rejected, reasons), what
    assert python.reject_example == native._message(example), what


def _rows_checker(module: Any, function: str) -> Any:
    original = module.convert

    def checked(request: Any, attributes: Any, **kwargs: Any) -> Converted:
        converted: Converted = original(request, attributes, **kwargs)
        out = getattr(native._native, function)(
            request.SerializeToString(),
            max_time_unix_nano=kwargs["max_time_unix_nano"],
            application_id=kwargs.get("application_id"),
        )
        data, _ = copy_binary.encode(converted.payload.rows, module.TYPES)
        _same(module.__name__, converted, out, data)
        assert converted.nul_replaced == out[6], f"{module.__name__}: NUL count"
        assert converted.payload.resources == out[7], f"{module.__name__}: resources"
        assert converted.payload.scopes == out[8], f"{module.__name__}: scopes"
        assert converted.payload.applications == out[9], f"{module.__name__}: applications"
        assert converted.payload.descriptions == out[10], f"{module.__name__}: descriptions"
        return converted

    return checked


def _logs_checker() -> Any:
    original = logs.LogsConverter.__call__

    def checked(self: logs.LogsConverter, request: Any, **kwargs: Any) -> Converted:
        now = self._now_ns()
        clock = self._now_ns
        self._now_ns = lambda: now
        try:
            converted: Converted = original(self, request, **kwargs)
            dataset, namespace = self.route
            out = native._native.convert_logs(
                request.SerializeToString(),
                max_time_unix_nano=now + self.max_future_skew_ns,
                now_unix_nano=now,
                dataset=dataset,
                namespace=namespace,
                application_id=kwargs.get("application_id"),
            )
        finally:
            self._now_ns = clock
        assert isinstance(converted.payload, BulkItems)
        _same("logs", converted, out, converted.payload.data)
        return converted

    return checked


@pytest.fixture(autouse=True)
def _cross_check_native(monkeypatch: pytest.MonkeyPatch) -> None:
    if native._native is not None:
        monkeypatch.setattr(traces, "convert", _rows_checker(traces, "convert_traces"))
        monkeypatch.setattr(metrics, "convert", _rows_checker(metrics, "convert_metrics"))
        monkeypatch.setattr(logs.LogsConverter, "__call__", _logs_checker())
