"""Measure OTLP/JSON decoding: ingestd's plan-driven decoder vs google.protobuf.json_format.

Run: .venv/bin/python -m tests.bench.otlp_json_bench
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from ingestd.model import Signal
from ingestd.receiver.otlp_json import parse_json
from tests.bench.logs_payload import logs_request

_IDS = ("traceId", "spanId", "parentSpanId")


def _ids(node: Any, convert: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _IDS and isinstance(value, str):
                node[key] = convert(value)
            else:
                _ids(value, convert)
    elif isinstance(node, list):
        for item in node:
            _ids(item, convert)


def otlp_json(message: Any) -> bytes:
    """OTLP/JSON as an SDK writes it: json_format's output with hex ids."""
    data = json_format.MessageToDict(message)
    _ids(data, lambda b64: base64.b64decode(b64).hex())
    return orjson.dumps(data)


def via_json_format(body: bytes) -> Any:
    data = orjson.loads(body)
    _ids(data, lambda h: base64.b64encode(bytes.fromhex(h)).decode())
    return json_format.ParseDict(
        data, logs_service_pb2.ExportLogsServiceRequest(), ignore_unknown_fields=True
    )


def best_cpu(fn: Any, *args: Any, runs: int = 5, loops: int = 10) -> float:
    best = float("inf")
    for _ in range(runs):
        began = time.process_time()
        for _ in range(loops):
            fn(*args)
        best = min(best, (time.process_time() - began) / loops)
    return best


def main() -> None:
    request = logs_request(512)
    body = otlp_json(request)
    assert parse_json(Signal.LOGS, body) == request
    assert via_json_format(body) == request
    ours = best_cpu(parse_json, Signal.LOGS, body)
    theirs = best_cpu(via_json_format, body)
    proto = best_cpu(
        logs_service_pb2.ExportLogsServiceRequest.FromString, request.SerializeToString()
    )
    print(f"512-record logs request, {len(body)} bytes of JSON (CPU time, best of 5)")
    print(f"  ingestd otlp_json      {ours * 1e3:7.2f} ms  ({512 / ours:8.0f} records/s)")
    print(f"  json_format + hex fix  {theirs * 1e3:7.2f} ms  ({512 / theirs:8.0f} records/s)")
    print(f"  protobuf (upb)         {proto * 1e3:7.2f} ms  ({512 / proto:8.0f} records/s)")
    print(f"  speed-up vs json_format: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
