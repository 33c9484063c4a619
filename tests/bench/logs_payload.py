"""SDK-shaped OTLP log requests for benchmarks: what a Python or Java SDK batch processor sends."""

from __future__ import annotations

import os
import random
import time

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

# Words of log bodies, shared with tests/bench/payloads.py.
WORDS = [
    "request",
    "handled",
    "user",
    "order",
    "payment",
    "cache",
    "miss",
    "retry",
    "timeout",
    "connection",
    "pool",
    "database",
    "query",
    "slow",
    "checkout",
    "inventory",
    "shipped",
    "queue",
    "consumer",
    "lag",
    "rebalanced",
    "token",
    "refreshed",
]


def _kv(key: str, value: str | int | float | bool) -> common_pb2.KeyValue:
    kv = common_pb2.KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value
    return kv


def logs_request(
    records: int = 512, *, service: str = "checkout", run_id: str = "", seed: int = 1
) -> logs_service_pb2.ExportLogsServiceRequest:
    """One request as the SDK's BatchLogRecordProcessor exports it (max_export_batch_size 512)."""
    rng = random.Random(seed)
    request = logs_service_pb2.ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(
        [
            _kv("service.name", service),
            _kv("service.namespace", "shop"),
            _kv("service.version", "1.4.2"),
            _kv("deployment.environment", "production"),
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.version", "1.45.2"),
            _kv("host.name", "node-7f9c"),
            _kv("process.pid", 4242),
        ]
    )
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "checkout.api"
    now = time.time_ns()
    for i in range(records):
        record = scope_logs.log_records.add()
        record.time_unix_nano = now + i * 1000
        record.observed_time_unix_nano = now + i * 1000 + 17
        record.severity_number = rng.choice((9, 9, 9, 13, 17))
        record.severity_text = {9: "INFO", 13: "WARN", 17: "ERROR"}[record.severity_number]
        record.body.string_value = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))
        record.trace_id = os.urandom(16)
        record.span_id = os.urandom(8)
        record.flags = 1
        record.attributes.extend(
            [
                _kv("code.function", "handle_request"),
                _kv("code.lineno", rng.randint(1, 900)),
                _kv("http.route", "/api/orders/{id}"),
                _kv("duration_ms", rng.random() * 100),
            ]
        )
        if run_id:
            record.attributes.append(_kv("run_id", run_id))
    return request
