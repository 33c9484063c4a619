"""What each small hostile request costs a real `ingestd run`: answer, time, CPU, memory.

`python -m tests.bench.hostile_costs [--cases a,b] [--timeout S]` (the dev stack's env loaded)

Each case gets a fresh daemon with the default limits (its own database; logs into the shared
test namespace), so one case's leftover work does not bill the next. Printed per case: the
answer, seconds until it came (or the client gave up), the daemon's CPU seconds until it was
idle again, its peak RSS above the idle RSS before, and the RSS left once idle (after the
memory guard's trim). Numbers for docs/reliability.md.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import zstandard
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.harness import IngestdProcess, PeakRss, base_config, create_design_tables, deep_merge
from tests.samples import histogram_request
from tests.wire import field

MiB = 1024 * 1024
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
EMPTY_RESOURCE = b"\x0a\x00"


@dataclass
class Target:
    proc: IngestdProcess
    grpc_port: int
    http_port: int
    timeout_s: float

    def grpc(self, method: str, body: bytes) -> str:
        with grpc.insecure_channel(
            f"127.0.0.1:{self.grpc_port}", options=[("grpc.max_send_message_length", 64 * MiB)]
        ) as channel:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                call(body, timeout=self.timeout_s)
            except grpc.RpcError as error:
                return f"{error.code().name}: {(error.details() or '')[:80]}"
            return "OK"

    def http(self, signal: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=self.timeout_s)
        try:
            conn.request(
                "POST",
                f"/v1/{signal}",
                body=body,
                headers={"Content-Type": "application/x-protobuf", **(headers or {})},
            )
            reply = conn.getresponse()
            return f"{reply.status}"
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        finally:
            conn.close()


def gzip64(t: Target) -> str:
    body = gzip.compress(EMPTY_RESOURCE * (32 * MiB - 1), compresslevel=9)
    return f"{len(body)} B gzip: " + t.http("traces", body, {"Content-Encoding": "gzip"})


def zstd64(t: Target) -> str:
    body = zstandard.ZstdCompressor(level=19).compress(EMPTY_RESOURCE * (32 * MiB - 1))
    return f"{len(body)} B zstd: " + t.http("traces", body, {"Content-Encoding": "zstd"})


def http20(t: Target) -> str:
    return "20 MiB raw: " + t.http("traces", EMPTY_RESOURCE * (10 * MiB - 4))


def grpc16_resources(t: Target) -> str:
    return t.grpc(TRACES, EMPTY_RESOURCE * (8 * MiB - 8))


def grpc16_records(t: Target) -> str:
    return t.grpc(LOGS, field(1, field(2, b"\x12\x00" * (8 * MiB - 16))))


def histograms(t: Target) -> str:
    answers = []
    for i in range(10):
        request = histogram_request(f"h{i}", 131_072 + i)
        answers.append(t.http("metrics", request.SerializeToString()))
    return "10 x 131,072+ buckets: " + ",".join(sorted(set(answers)))


def namespaces(t: Target) -> str:
    answers = []
    for i in range(100):
        request = ExportLogsServiceRequest()
        record = request.resource_logs.add().scope_logs.add().log_records.add()
        record.time_unix_nano = time.time_ns()
        attribute = record.attributes.add(key="data_stream.namespace")
        attribute.value.string_value = "ingestdtest" + "." * (MiB - 12) + str(i)
        answers.append(t.http("logs", request.SerializeToString()))
    return "100 x 1 MB namespaces: " + ",".join(sorted(set(answers)))


def logs12(t: Target) -> str:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for i in range(60_000):
        record = scope.log_records.add(time_unix_nano=time.time_ns())
        record.body.string_value = f"line {i} " + "x" * 120
    body = request.SerializeToString()
    admin = t.proc.admin_url
    worst = [0.0]
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            began = time.monotonic()
            with urllib.request.urlopen(admin + "/livez", timeout=30) as reply:
                reply.read()
            worst[0] = max(worst[0], time.monotonic() - began)
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        answer = t.grpc(LOGS, body)
    finally:
        done.set()
        prober.join()
    return f"{len(body)} B, 60,000 records: {answer}; slowest /livez {worst[0] * 1000:.0f} ms"


CASES: dict[str, Callable[[Target], str]] = {
    "gzip64": gzip64,
    "zstd64": zstd64,
    "http20": http20,
    "grpc16_resources": grpc16_resources,
    "grpc16_records": grpc16_records,
    "histograms": histograms,
    "namespaces": namespaces,
    "logs12": logs12,
}


def _database(admin_dsn: str, dsn: str) -> tuple[str, str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER ingestd')
    return name, psycopg.conninfo.make_conninfo(dsn, dbname=name)


def _drop(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_case(name: str, timeout_s: float) -> dict[str, Any]:
    env = os.environ
    admin_dsn = env["INGESTD_PG_ADMIN_DSN"]
    db, dsn = _database(admin_dsn, env["INGESTD_PG_DSN"])
    try:
        create_design_tables(dsn, admin_dsn)
        config = deep_merge(
            base_config(dsn, env["INGESTD_ES_URL"], env["INGESTD_REDIS_URL"]),
            {
                "sinks": {"elasticsearch": {"logs_namespace": "ingestdtest"}},
                "maintenance": {"enabled": False},
                "redis": {"key_prefix": f"b{uuid.uuid4().hex[:10]}:"},
            },
        )
        with tempfile.TemporaryDirectory() as workdir:
            proc = IngestdProcess(config, Path(workdir))
            try:
                proc.wait_ready()
                target = Target(
                    proc,
                    proc.port_of("grpc_listening"),
                    proc.port_of("http_receiver_listening"),
                    timeout_s,
                )
                return _measure(target, CASES[name])
            finally:
                proc.terminate(timeout_s=max(30.0, timeout_s))
    finally:
        _drop(admin_dsn, db)


def _measure(target: Target, case: Callable[[Target], str]) -> dict[str, Any]:
    daemon = target.proc
    time.sleep(2.0)
    cpu = daemon.cpu_s()
    began = time.monotonic()
    with PeakRss(daemon, interval_s=0.05) as peak:
        answer = case(target)
        answered = time.monotonic() - began
        # The work may go on after the client gave up: wait until the daemon is idle.
        last = daemon.cpu_s()
        while True:
            time.sleep(1.0)
            now = daemon.cpu_s()
            if now - last < 0.05:
                break
            last = now
        time.sleep(1.5)  # the memory guard trims once idle
    return {
        "answer": answer,
        "answer_s": round(answered, 3),
        "cpu_s": round(daemon.cpu_s() - cpu, 2),
        "peak_rss_mib": round(peak.mib - peak.before, 1),
        "rss_after_mib": round(daemon.rss_mib() - peak.before, 1),
        "idle_rss_mib": round(peak.before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    for name in args.cases.split(","):
        result = run_case(name.strip(), args.timeout)
        print(f"{name}: {result}", flush=True)


if __name__ == "__main__":
    main()
