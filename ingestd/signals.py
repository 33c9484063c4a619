"""What each OTLP signal is, declared once: its messages, endpoints, item count, converter, sink.

The receivers, the decoders, the rate limiter and the daemon all read `SIGNALS`; none keeps a
per-signal mapping of its own. Adding a signal is one `SignalSpec` here plus its converter (in
`ingestd.convert`) and, if it needs one, its sink's writer.

It sits above `ingestd.convert` (it names the converters) and below everything that routes
requests; it imports no config at run time, so the decoders stay light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ingestd.convert import logs, metrics, traces, wire
from ingestd.convert.limits import request_limits
from ingestd.model import Converter, Signal

if TYPE_CHECKING:
    from ingestd.config import Config

# The sink a signal is stored by: its `sinks.<name>` config section and its health component.
SinkName = Literal["timescale", "elasticsearch"]


@dataclass(frozen=True, slots=True)
class SignalSpec:
    signal: Signal
    # The official Export*ServiceRequest / Response classes.
    request_type: Any
    response_type: Any
    # The class protobuf bodies decode into for the converter (`convert.wire`'s raw-attribute
    # classes where there is one; else the official request).
    decode_type: Any
    # The partial_success field that counts refused records.
    rejected_field: str
    # The gRPC service; its one method is Export.
    grpc_service: str
    http_path: str
    # (resource, items) per resource of a decoded request: what the batcher and limits count.
    count_items: Callable[[Any], Iterable[tuple[Any, int]]]
    # The converter for this process's config: (config, the process's logs route policy,
    # large=True for the one that converts large requests in a thread).
    converter: Callable[..., Converter]
    sink: SinkName
    # The table (Timescale) or data stream family (Elasticsearch) it is written to; names its
    # batcher and writer.
    store: str
    # The Timescale table's COPY columns, in the converter's row order.
    columns: Sequence[tuple[str, str]] = ()

    @property
    def grpc_method(self) -> str:
        return f"/{self.grpc_service}/Export"


def _spans(request: Any) -> Iterable[tuple[Any, int]]:
    for rs in request.resource_spans:
        yield rs.resource, sum(len(ss.spans) for ss in rs.scope_spans)


def _data_points(request: Any) -> Iterable[tuple[Any, int]]:
    # Items are data points (one row each), not metrics.
    for rm in request.resource_metrics:
        points = 0
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    points += len(getattr(metric, kind).data_points)
        yield rm.resource, points


def _log_records(request: Any) -> Iterable[tuple[Any, int]]:
    for rl in request.resource_logs:
        yield rl.resource, sum(len(sl.log_records) for sl in rl.scope_logs)


# The thread's converters (large requests) keep a smaller attribute cache than the event
# loop's (48 MiB), so that the second instance adds at most this much per signal.
_LARGE_CACHE_BYTES = 16 * 1024 * 1024


def _logs_converter(
    config: Config, routes: logs.RoutePolicy | None = None, *, large: bool = False
) -> Converter:
    es = config.sinks.elasticsearch
    return logs.LogsConverter(
        dataset=es.logs_dataset,
        namespace=es.logs_namespace,
        max_future_skew_s=config.ingest.max_future_skew_s,
        routes=routes,
    )


def _rows_converter(kind: Callable[..., Converter]) -> Callable[..., Converter]:
    def make(config: Config, routes: object = None, *, large: bool = False) -> Converter:
        options = {"cache_bytes": _LARGE_CACHE_BYTES} if large else {}
        return kind(
            max_future_skew_s=config.ingest.max_future_skew_s,
            limits=request_limits(config.ingest),
            **options,
        )

    return make


SIGNALS: dict[Signal, SignalSpec] = {
    Signal.TRACES: SignalSpec(
        signal=Signal.TRACES,
        request_type=trace_service_pb2.ExportTraceServiceRequest,
        response_type=trace_service_pb2.ExportTraceServiceResponse,
        decode_type=wire.TRACES_REQUEST,
        rejected_field="rejected_spans",
        grpc_service="opentelemetry.proto.collector.trace.v1.TraceService",
        http_path="/v1/traces",
        count_items=_spans,
        converter=_rows_converter(traces.TraceConverter),
        sink="timescale",
        store=traces.TABLE,
        columns=traces.COLUMNS,
    ),
    Signal.METRICS: SignalSpec(
        signal=Signal.METRICS,
        request_type=metrics_service_pb2.ExportMetricsServiceRequest,
        response_type=metrics_service_pb2.ExportMetricsServiceResponse,
        decode_type=wire.METRICS_REQUEST,
        rejected_field="rejected_data_points",
        grpc_service="opentelemetry.proto.collector.metrics.v1.MetricsService",
        http_path="/v1/metrics",
        count_items=_data_points,
        converter=_rows_converter(metrics.MetricConverter),
        sink="timescale",
        store=metrics.TABLE,
        columns=metrics.COLUMNS,
    ),
    Signal.LOGS: SignalSpec(
        signal=Signal.LOGS,
        request_type=logs_service_pb2.ExportLogsServiceRequest,
        response_type=logs_service_pb2.ExportLogsServiceResponse,
        decode_type=logs_service_pb2.ExportLogsServiceRequest,
        rejected_field="rejected_log_records",
        grpc_service="opentelemetry.proto.collector.logs.v1.LogsService",
        http_path="/v1/logs",
        count_items=_log_records,
        converter=_logs_converter,
        sink="elasticsearch",
        store="logs",
    ),
}

BY_HTTP_PATH: dict[str, SignalSpec] = {spec.http_path: spec for spec in SIGNALS.values()}
BY_GRPC_METHOD: dict[str, SignalSpec] = {spec.grpc_method: spec for spec in SIGNALS.values()}
