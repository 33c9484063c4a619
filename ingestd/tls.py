"""Server TLS for OTLP/HTTP, the admin server and OTLP/gRPC: contexts and certificate reload.

`ServerTls` owns one `ssl.SSLContext` (aiohttp) for a `TlsConfig`: `min_version` enforced,
and with `reload_interval_s > 0` its `watch()` loop loads a renewed certificate into the same
context, so new connections get it and open ones keep theirs. `grpc_credentials` gives grpcio
dynamic credentials that re-read the files on a handshake when they changed; grpcio has no
minimum-version setting (config.py refuses anything but 1.2 for gRPC).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import grpc
import structlog
from aiohttp import web

from ingestd.config import TlsConfig

log = structlog.get_logger("ingestd.tls")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# (mtime_ns, size) of each file: a renewal (cert-manager writes a new file and swaps a
# symlink) changes at least one of them.
Stamp = tuple[tuple[int, int], ...]


def _stamp(paths: list[Path]) -> Stamp:
    out = []
    for path in paths:
        st = path.stat()
        out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


class ServerTls:
    """One server's SSL context and the loop that reloads its certificate."""

    def __init__(self, config: TlsConfig, name: str) -> None:
        """Raises OSError / ssl.SSLError when the files cannot be loaded."""
        assert config.cert_file is not None
        assert config.key_file is not None
        self._config = config
        self._name = name
        self._files = [config.cert_file, config.key_file]
        if config.client_ca_file is not None:
            self._files.append(config.client_ca_file)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = _VERSIONS[config.min_version]
        self._stamp = _stamp(self._files)
        self._load()
        self.reloads = 0

    def _load(self) -> None:
        self.context.load_cert_chain(str(self._config.cert_file), str(self._config.key_file))
        if self._config.client_ca_file is not None:
            self.context.load_verify_locations(str(self._config.client_ca_file))
            self.context.verify_mode = ssl.CERT_REQUIRED

    def reload_if_changed(self) -> bool:
        """Load the files again when they changed; a broken renewal keeps the old certificate."""
        try:
            stamp = _stamp(self._files)
            if stamp == self._stamp:
                return False
            self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("tls_reload_failed", server=self._name, error=str(exc))
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("tls_reloaded", server=self._name, cert_file=str(self._config.cert_file))
        return True

    async def watch(self) -> None:
        """Check the files every `reload_interval_s` until cancelled (0: returns at once)."""
        interval = self._config.reload_interval_s
        if not interval:
            return
        while True:
            await asyncio.sleep(interval)
            # A few stat() calls; the load itself (rare) takes about a millisecond.
            self.reload_if_changed()


def server_context(config: TlsConfig, name: str) -> ServerTls | None:
    """A `ServerTls` for *config*, or None when TLS is off."""
    return ServerTls(config, name) if config.enabled else None


def grpc_credentials(config: TlsConfig) -> grpc.ServerCredentials:
    """grpcio server credentials; with `reload_interval_s` they follow changed files."""
    fetcher = _GrpcFetcher(config)
    require_client = config.client_ca_file is not None
    if not config.reload_interval_s:
        key, cert, client_ca = fetcher.read()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=require_client
        )
    # grpc-stubs omit that the fetcher may return None (keep the current certificate).
    return grpc.dynamic_ssl_server_credentials(
        fetcher.certificate_config(),
        fetcher,  # type: ignore[arg-type]
        require_client_authentication=require_client,
    )


class _GrpcFetcher:
    """grpc calls this on each handshake, from its own threads; None keeps the certificate."""

    def __init__(self, config: TlsConfig) -> None:
        assert config.cert_file is not None
        assert config.key_file is not None
        self._config = config
        # The key first: a missing key is named in the start-up error, as before.
        self._files = [config.key_file, config.cert_file]
        if config.client_ca_file is not None:
            self._files.append(config.client_ca_file)
        self._stamp = _stamp(self._files)
        self._checked = time.monotonic()

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        config = self._config
        assert config.cert_file is not None
        assert config.key_file is not None
        client_ca = config.client_ca_file.read_bytes() if config.client_ca_file else None
        return config.key_file.read_bytes(), config.cert_file.read_bytes(), client_ca

    def certificate_config(self) -> grpc.ServerCertificateConfiguration:
        key, cert, client_ca = self.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        # Look at the files at most once per interval, whatever the handshake rate.
        now = time.monotonic()
        if now - self._checked < self._config.reload_interval_s:
            return None
        self._checked = now
        try:
            stamp = _stamp(self._files)
            if stamp == self._stamp:
                return None
            fresh = self.certificate_config()
        except OSError as exc:
            log.error("tls_reload_failed", server="grpc", error=str(exc))
            return None
        self._stamp = stamp
        log.info("tls_reloaded", server="grpc", cert_file=str(self._config.cert_file))
        return fresh


async def stop_web_server(runner: web.BaseRunner | None, watch: asyncio.Task[None] | None) -> None:
    """Stop an aiohttp server (admin, OTLP/HTTP) and the task reloading its certificates."""
    if watch is not None:
        watch.cancel()
    if runner is not None:
        await runner.cleanup()
