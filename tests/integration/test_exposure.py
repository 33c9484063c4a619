"""Exposure of a real `ingestd run`: auth first, CORS, compression allowlists, admin token, TLS.

One daemon with auth, CORS, compression allowlists and an admin status token serves most
tests; a second one serves TLS everywhere (certificates made by the openssl command in the
test). Each test states what a client (or a browser) sees on the wire.
"""

from __future__ import annotations

import gzip
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.harness import IngestdProcess, RawClients, base_config, create_design_tables, deep_merge
from tests.integration.conftest import Stack
from tests.samples import bare_spans_request, span_request

pytestmark = [pytest.mark.integration]

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TOKEN = "exposure-test-token-0123456789"
BEARER = f"Bearer {TOKEN}"
ADMIN_TOKEN = "admin-status-token-0123456789"
PROTOBUF = {"Content-Type": "application/x-protobuf", "Authorization": BEARER}


class Daemon(RawClients):
    """The daemon under test, with a gRPC client that takes per-call channel options."""

    def grpc_traces(
        self, body: bytes, metadata: tuple[tuple[str, str], ...] = (), **options: Any
    ) -> tuple[grpc.StatusCode, bytes]:
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}", **options) as channel:
            call = channel.unary_unary(TRACES, request_serializer=None, response_deserializer=None)
            try:
                return grpc.StatusCode.OK, call(body, timeout=30, metadata=metadata)
            except grpc.RpcError as error:
                return error.code(), (error.details() or "").encode()


@pytest.fixture(scope="module")
def daemon(
    make_database: Callable[[], str], stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    dsn = make_database()
    create_design_tables(dsn, stack.pg_admin_dsn)
    config = deep_merge(
        base_config(dsn, stack.es_url, stack.redis_url),
        {
            "auth": {"enabled": True, "tokens": [{"token": TOKEN, "tenant": "acme"}]},
            "receivers": {
                "http": {
                    "compression_algorithms": ["gzip"],
                    "cors": {
                        "allowed_origins": ["https://app.example.com", "https://*.corp.test"],
                        "allowed_headers": ["Authorization", "Content-Encoding"],
                        "max_age": 600,
                    },
                },
                "grpc": {"compression_algorithms": ["deflate"]},
            },
            "admin": {"status_token": ADMIN_TOKEN},
            "sinks": {"elasticsearch": {"enabled": False}},
            "maintenance": {"enabled": False},
        },
    )
    proc = IngestdProcess(config, tmp_path_factory.mktemp("exposure"))
    try:
        proc.wait_ready()
        yield Daemon(proc)
    finally:
        proc.terminate()


def test_grpc_empty_body_without_token_is_unauthenticated(daemon: Daemon) -> None:
    """An empty gRPC body is not answered OK without a token: auth comes before anything."""
    code, _ = daemon.grpc_traces(b"")
    assert code is grpc.StatusCode.UNAUTHENTICATED
    code, _ = daemon.grpc_traces(b"", metadata=(("authorization", "Bearer wrong-token-xyz"),))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    code, body = daemon.grpc_traces(b"", metadata=(("authorization", BEARER),))
    assert code is grpc.StatusCode.OK
    assert ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()


def test_grpc_request_with_token_is_stored(daemon: Daemon) -> None:
    """The token still lets a real request through."""
    code, _ = daemon.grpc_traces(
        bare_spans_request(3).SerializeToString(), metadata=(("authorization", BEARER),)
    )
    assert code is grpc.StatusCode.OK


def test_http_401_carries_www_authenticate(daemon: Daemon) -> None:
    """HTTP 401 names the Bearer scheme (RFC 9110 11.6.1; RFC 6750's error with a bad token)."""
    headers = {"Content-Type": "application/x-protobuf"}
    status, reply, _ = daemon.request("POST", "/v1/traces", b"", headers)
    assert status == 401
    assert reply["www-authenticate"] == 'Bearer realm="ingestd"'
    status, reply, _ = daemon.request(
        "POST", "/v1/traces", b"", {**headers, "Authorization": "Bearer nope-nope-nope"}
    )
    assert status == 401
    assert reply["www-authenticate"] == 'Bearer realm="ingestd", error="invalid_token"'


def test_http_auth_comes_before_method_and_media_checks(daemon: Daemon) -> None:
    """Without a token, a GET or a wrong Content-Type hears 401, not 405 / 415."""
    assert daemon.request("GET", "/v1/traces")[0] == 401
    assert daemon.request("POST", "/v1/traces", b"x", {"Content-Type": "text/plain"})[0] == 401
    status, _, _ = daemon.request(
        "POST",
        "/v1/traces",
        bare_spans_request(2).SerializeToString(),
        {"Content-Type": "application/x-protobuf", "Authorization": BEARER},
    )
    assert status == 200


def preflight(daemon: Daemon, origin: str, headers: str = "content-type") -> dict[str, str]:
    status, reply, body = daemon.request(
        "OPTIONS",
        "/v1/traces",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )
    assert (status, body) == (204, b"")
    return reply


def test_cors_preflight_from_an_allowed_origin_is_answered(daemon: Daemon) -> None:
    """A browser's preflight OPTIONS (no token) gets the allow headers and the max age."""
    reply = preflight(daemon, "https://app.example.com", "content-type,authorization")
    assert reply["access-control-allow-origin"] == "https://app.example.com"
    assert reply["access-control-allow-methods"] == "POST"
    assert reply["access-control-allow-headers"] == "content-type, authorization"
    assert reply["access-control-max-age"] == "600"
    wildcard = preflight(daemon, "https://team1.corp.test", "content-type,content-encoding")
    assert wildcard["access-control-allow-origin"] == "https://team1.corp.test"


def test_cors_preflight_from_elsewhere_gets_no_allow_headers(daemon: Daemon) -> None:
    """Another origin, another method or an unlisted header: the browser is not allowed."""
    for origin, headers in (
        ("https://evil.example.net", "content-type"),
        ("https://corp.test.evil.net", "content-type"),
        ("https://app.example.com", "x-custom-header"),
    ):
        reply = preflight(daemon, origin, headers)
        assert "access-control-allow-origin" not in reply, (origin, headers)


def test_cors_actual_post_carries_allow_origin(daemon: Daemon) -> None:
    """The POST after the preflight carries Access-Control-Allow-Origin, error answers too."""
    body = bare_spans_request(2).SerializeToString()
    origin = {"Origin": "https://app.example.com"}
    status, reply, _ = daemon.request("POST", "/v1/traces", body, {**PROTOBUF, **origin})
    assert status == 200
    assert reply["access-control-allow-origin"] == "https://app.example.com"
    assert reply["vary"] == "Origin"
    status, reply, _ = daemon.request("POST", "/v1/traces", body, origin)  # no token
    assert status == 401
    assert reply["access-control-allow-origin"] == "https://app.example.com"
    status, reply, _ = daemon.request(
        "POST", "/v1/traces", body, {**PROTOBUF, "Origin": "https://evil.example.net"}
    )
    assert "access-control-allow-origin" not in reply


def test_http_compression_allowlist(daemon: Daemon) -> None:
    """Only the listed Content-Encodings are decoded; zstd is refused 400 when left out."""
    body = bare_spans_request(2).SerializeToString()
    gz = daemon.request(
        "POST", "/v1/traces", gzip.compress(body), {**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert gz[0] == 200
    status, _, answer = daemon.request(
        "POST",
        "/v1/traces",
        zstandard.ZstdCompressor().compress(body),
        {**PROTOBUF, "Content-Encoding": "zstd"},
    )
    assert status == 400
    assert b"not accepted here" in answer


def test_grpc_compression_allowlist(daemon: Daemon) -> None:
    """A gzip message is refused by grpc when only deflate is enabled; deflate is served."""
    body = bare_spans_request(50).SerializeToString()
    token = (("authorization", BEARER),)
    code, _ = daemon.grpc_traces(body, token, compression=grpc.Compression.Gzip)
    assert code is grpc.StatusCode.UNIMPLEMENTED
    code, _ = daemon.grpc_traces(body, token, compression=grpc.Compression.Deflate)
    assert code is grpc.StatusCode.OK


def test_admin_status_needs_the_token_probes_and_metrics_do_not(daemon: Daemon) -> None:
    """/status answers 401 without the admin token; /livez, /readyz and /metrics stay open."""
    status, _ = daemon.proc.get("/status")
    assert status == 401
    request = urllib.request.Request(
        daemon.proc.admin_url + "/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200
        assert "health" in json.loads(reply.read())
    for path in ("/livez", "/readyz", "/metrics"):
        assert daemon.proc.get(path)[0] == 200, path
    ready = json.loads(daemon.proc.get("/readyz")[1])
    assert ready["components"]["timescale"]["state"] == "ok"
    assert not any("detail" in c for c in ready["components"].values())


def test_database_error_text_is_not_sent_to_clients(stack: Stack, tmp_path: Path) -> None:
    """PostgreSQL refusing connections: the client hears a fixed sentence, the log the text."""
    dead = "postgresql://ingestd:pw@127.0.0.1:1/secret_db_name"
    config = deep_merge(
        base_config(dead, stack.es_url, stack.redis_url),
        {
            "sinks": {
                "timescale": {
                    "pool": {"min_size": 0, "connect_timeout_s": 0.5},
                    "retry": {"initial_backoff_s": 0.1, "max_backoff_s": 0.2, "max_elapsed_s": 1},
                },
                "elasticsearch": {"enabled": False},
            },
            "pressure": {"enabled": False},
            "maintenance": {"enabled": False},
        },
    )
    proc = IngestdProcess(config, tmp_path)
    try:
        daemon = Daemon(proc)
        body = span_request(3, tag="dead-db").SerializeToString()
        code, details = daemon.grpc_traces(body)
        status, _, answer = daemon.request(
            "POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"}
        )
    finally:
        proc.terminate()
    assert code is grpc.StatusCode.UNAVAILABLE
    assert status == 503
    for text in (details, answer):
        for leak in (b"127.0.0.1", b"secret_db_name", b"port 1", b"connection"):
            assert leak not in text, text
    logged = json.dumps(proc.events)
    assert "127.0.0.1" in logged  # the operator still sees where it failed
