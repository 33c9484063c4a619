"""CPU time to convert one 512-record logs request under the default config (routed by
`data_stream.*` attributes through the process's RoutePolicy): python vs native.

`python -m tests.bench.logs_routing_cost [--records 512] [--repeat 7]`. Prints the median of
*repeat* rounds of CPU time per request (each round converts the request `--rounds` times);
the python figure includes upb's parse, as the python codec's receive path pays it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from ingestd.config import Config
from ingestd.convert import native
from ingestd.convert.logs import LogsConverter, route_policy
from tests.bench.logs_payload import logs_request

_parse = logs_service_pb2.ExportLogsServiceRequest.FromString


def _converter(**routing: object) -> LogsConverter:
    """The reference with the default config's policy (or *routing* overrides)."""
    config = Config().sinks.elasticsearch.routing.model_copy(update=routing)
    return LogsConverter(routes=route_policy(config))


def _routed(request: logs_service_pb2.ExportLogsServiceRequest, datasets: int) -> bytes:
    """*request* with `data_stream.dataset` on every record, *datasets* distinct values."""
    copy = logs_service_pb2.ExportLogsServiceRequest()
    copy.CopyFrom(request)
    for n, record in enumerate(copy.resource_logs[0].scope_logs[0].log_records):
        record.attributes.append(
            common_pb2.KeyValue(
                key="data_stream.dataset",
                value=common_pb2.AnyValue(string_value=f"team{n % datasets}"),
            )
        )
    return copy.SerializeToString()


def _cpu_ms(work: Callable[[], object], rounds: int, repeat: int) -> float:
    work()
    samples = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(rounds):
            work()
        samples.append((time.process_time() - start) / rounds * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if not native.available():
        raise SystemExit(f"ingestd_native is not installed ({native.IMPORT_ERROR})")
    request = logs_request(args.records)
    cases: list[tuple[str, bytes, str, dict[str, object]]] = [
        ("SDK request, no data_stream.* (default config)", request.SerializeToString(), "", {}),
        ("every record routed, 4 datasets", _routed(request, 4), "", {}),
        ("registered application (namespace locked)", request.SerializeToString(), "app-1", {}),
        (
            "every record routed, 4 datasets, all refused (allowlist)",
            _routed(request, 4),
            "",
            {"allowed_datasets": ("other*",)},
        ),
    ]
    print(f"{args.records} records; CPU ms per request, median of {args.repeat} x {args.rounds}")
    print(f"{'case':58} {'bytes':>8} {'python':>8} {'native':>8} {'ratio':>6}")
    for name, body, app, routing in cases:
        reference = _converter(**routing)
        compiled = native.NativeLogsConverter(_converter(**routing))

        def python(
            body: bytes = body, app: str = app, reference: LogsConverter = reference
        ) -> object:
            return reference(_parse(body), app)

        def rust(
            body: bytes = body, app: str = app, compiled: native.NativeLogsConverter = compiled
        ) -> object:
            return compiled(body, app)

        assert bytes(python().payload.data) == bytes(rust().payload.data)  # type: ignore[attr-defined]
        py_ms = _cpu_ms(python, args.rounds, args.repeat)
        rs_ms = _cpu_ms(rust, args.rounds, args.repeat)
        print(f"{name:58} {len(body):8} {py_ms:8.3f} {rs_ms:8.3f} {py_ms / rs_ms:5.1f}x")


if __name__ == "__main__":
    main()
