"""Every conversion in these tests is also run through the native codec (when it is built):
the Python converters' own cases (hostile inputs included) must give byte-identical output."""

from __future__ import annotations

import copy
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
        # The native codec gets a twin of this converter with the policy as it was before.
        twin = copy.copy(self)
        twin.routes = copy.deepcopy(self.routes)
        try:
            converted: Converted = original(self, request, application_id)
        finally:
            self._now_ns = clock
        compiled = native.NativeLogsConverter(twin, now_ns=lambda: now).compiled(
            request.SerializeToString(), application_id
        )
        assert isinstance(converted.payload, BulkItems)
        assert isinstance(compiled.payload, BulkItems)
        assert converted.payload.data == compiled.payload.data, "logs: native bytes differ"
        assert (converted.rejected, dict(converted.reject_reasons)) == (
            compiled.rejected,
            dict(compiled.reject_reasons),
        ), "logs"
        assert converted.reject_example == compiled.reject_example, "logs"
        assert vars(twin.routes) == vars(self.routes), "logs: policy state differs"
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
