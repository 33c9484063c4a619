"""TLS on a real `ingestd run`: minimum version, certificate reload without restart, admin TLS.

Certificates are made in the test with the openssl command (self-signed for 127.0.0.1, the
client trusts exactly the one it expects). The daemon serves OTLP/HTTP, OTLP/gRPC and the
admin server over TLS, with `reload_interval_s: 0.2`.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.harness import IngestdProcess, base_config, create_design_tables, deep_merge
from tests.integration.conftest import Stack, make_certificate
from tests.samples import bare_spans_request

pytestmark = [pytest.mark.integration]

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def install(source: tuple[Path, Path], target: tuple[Path, Path]) -> None:
    """Put a certificate in place as a renewal does: new files renamed over the old ones."""
    for src, dst in zip(source, target, strict=True):
        tmp = dst.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)


def client_context(trusted: Path, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(trusted))
    for attribute, value in versions.items():
        setattr(context, attribute, value)
    return context


class TlsDaemon:
    def __init__(self, proc: IngestdProcess, certs: Path) -> None:
        self.proc = proc
        self.certs = certs
        self.http_port = proc.port_of("http_receiver_listening")
        self.grpc_port = proc.port_of("grpc_listening")
        self.admin_port = proc.port_of("admin_listening")

    def served_cn(self, port: int, *trusted: Path) -> str:
        """The CN of the certificate a new TLS connection to *port* is served."""
        context = client_context(trusted[0])
        for path in trusted[1:]:
            context.load_verify_locations(cafile=str(path))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        try:
            conn.connect()
            cert = conn.sock.getpeercert()  # type: ignore[union-attr]
        finally:
            conn.close()
        subject = dict(pair[0] for pair in cert["subject"])
        return str(subject["commonName"])

    def grpc_ok(self, trusted: Path) -> bool:
        credentials = grpc.ssl_channel_credentials(root_certificates=trusted.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{self.grpc_port}", credentials) as channel:
            call = channel.unary_unary(TRACES, request_serializer=None, response_deserializer=None)
            try:
                call(bare_spans_request(1).SerializeToString(), timeout=10)
            except grpc.RpcError as error:
                if error.code() is grpc.StatusCode.UNAVAILABLE:
                    return False  # the handshake failed: the certificate is not trusted
                raise
        return True


@pytest.fixture(scope="module")
def tls_daemon(
    make_database: Callable[[], str], stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsDaemon]:
    certs = tmp_path_factory.mktemp("certs")
    first = make_certificate(certs, "first")
    live = (certs / "live.crt", certs / "live.key")
    install(first, live)
    dsn = make_database()
    create_design_tables(dsn, stack.pg_admin_dsn)
    tls = {"cert_file": str(live[0]), "key_file": str(live[1]), "reload_interval_s": 0.2}
    config = deep_merge(
        base_config(dsn, stack.es_url, stack.redis_url),
        {
            "receivers": {
                "http": {"tls": {**tls, "min_version": "1.3"}},
                "grpc": {"tls": tls},
            },
            "admin": {"tls": tls},
            "sinks": {"elasticsearch": {"enabled": False}},
            "maintenance": {"enabled": False},
        },
    )
    proc = IngestdProcess(config, tmp_path_factory.mktemp("tls"))
    try:
        daemon = TlsDaemon(proc, certs)
        deadline = time.monotonic() + 60
        while True:
            try:
                url = f"https://127.0.0.1:{daemon.admin_port}/readyz"
                context = client_context(certs / "first.crt")
                with urllib.request.urlopen(url, timeout=5, context=context) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
        yield daemon
    finally:
        proc.terminate()


def test_admin_server_serves_tls(tls_daemon: TlsDaemon) -> None:
    """With admin.tls the probes and /metrics answer over HTTPS only."""
    context = client_context(tls_daemon.certs / "first.crt")
    url = f"https://127.0.0.1:{tls_daemon.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5, context=context) as reply:
        assert reply.status == 200
    plain = http.client.HTTPConnection("127.0.0.1", tls_daemon.admin_port, timeout=5)
    plain.request("GET", "/livez")
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.getresponse()


def test_http_min_version_refuses_tls_1_2(tls_daemon: TlsDaemon) -> None:
    """receivers.http.tls.min_version 1.3: a client limited to TLS 1.2 fails the handshake."""
    trusted = tls_daemon.certs / "first.crt"
    old = client_context(trusted, maximum_version=ssl.TLSVersion.TLSv1_2)
    conn = http.client.HTTPSConnection("127.0.0.1", tls_daemon.http_port, timeout=5, context=old)
    with pytest.raises(ssl.SSLError):
        conn.connect()
    assert tls_daemon.served_cn(tls_daemon.http_port, trusted) == "first"


def test_certificates_reload_without_restart(tls_daemon: TlsDaemon) -> None:
    """A renewed certificate is served to new connections on all three servers, no restart."""
    certs = tls_daemon.certs
    assert tls_daemon.grpc_ok(certs / "first.crt")
    second = make_certificate(certs, "second")
    install(second, (certs / "live.crt", certs / "live.key"))
    deadline = time.monotonic() + 10
    ports = (tls_daemon.http_port, tls_daemon.admin_port)
    both = (certs / "first.crt", certs / "second.crt")
    while time.monotonic() < deadline:
        if all(tls_daemon.served_cn(port, *both) == "second" for port in ports):
            break
        time.sleep(0.2)
    for port in ports:
        assert tls_daemon.served_cn(port, certs / "second.crt") == "second"
    time.sleep(0.3)  # past grpc's check interval: the next handshake reads the files
    assert tls_daemon.grpc_ok(certs / "second.crt")
    assert not tls_daemon.grpc_ok(certs / "first.crt")
    assert tls_daemon.proc.proc.poll() is None
    reloads = [e for e in tls_daemon.proc.events if e.get("event") == "tls_reloaded"]
    assert {e["server"] for e in reloads} == {"http", "admin", "grpc"}
