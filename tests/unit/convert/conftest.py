"""Every conversion in these tests is also run through the native codec (when it is built):
the Python converters' own cases (hostile inputs included) must give byte-identical output."""

from __future__ import annotations

from typing import Any

import pytest

from ingestd.convert import copy_binary, logs, metrics, native, traces
from ingestd.convert.bulk import BulkItems
from ingestd.convert.limits import DEFAULT_LIMITS
from ingestd.model import Converted


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
            application_id=kwargs.get("application_id") or None,
            max_buckets_per_point=kwargs.get("limits", DEFAULT_LIMITS).max_buckets_per_point,
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

    def checked(self: logs.LogsConverter, request: Any, application_id: str = "") -> Converted:
        now = self._now_ns()
        clock = self._now_ns
        self._now_ns = lambda: now
        refused = self.routes.refused
        try:
            converted: Converted = original(self, request, application_id)
            if application_id or self.routes.refused != refused:
                # The native logs codec has no RoutePolicy and no namespace lock: these requests
                # go to the reference (`native.NativeLogsConverter`), nothing to compare.
                return converted
            dataset, namespace = self.route
            out = native._native.convert_logs(
                request.SerializeToString(),
                max_time_unix_nano=now + self.max_future_skew_ns,
                now_unix_nano=now,
                dataset=dataset,
                namespace=namespace,
                from_attributes=self.routes.from_attributes,
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
        for module, function, converter in (
            (traces, "convert_traces", traces.TraceConverter),
            (metrics, "convert_metrics", metrics.MetricConverter),
        ):
            checked = _rows_checker(module, function)
            monkeypatch.setattr(module, "convert", checked)
            monkeypatch.setattr(converter, "convert_request", staticmethod(checked))
        monkeypatch.setattr(logs.LogsConverter, "__call__", _logs_checker())
