"""Install the peers the benchmark compares against, outside the repository, from public Go modules.

    python -m tests.bench.peers install      # build what is missing (minutes on 2 cores)
    python -m tests.bench.peers status       # what is cached, with build times

- `telemetrygen` (collector-contrib `cmd/telemetrygen`): a second, independent OTLP client.
- The OpenTelemetry Collector built with the OpenTelemetry Collector Builder: OTLP receiver,
  batch processor, Elasticsearch exporter (contrib) and the nop and debug exporters.

Everything lands under $INGESTD_PEERS_DIR (default /var/cache/ingestd/peers), keyed by the pinned
versions and the builder config, so a second run reuses the binaries. Go modules come from the
module proxy (GOPROXY); checksums are verified through the proxy's sumdb mirror. Nothing fetched
or built is ever written inside the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Pinned together: the Collector core v0.153.0 pairs with its stable modules at v1.59.0, and
# contrib tags the same minor. Change them together (and read the new defaults, see docs/reports).
# v0.153.0, not the newest: the module proxy reachable here answers 403 "not available" for the
# elasticsearch exporter's v0.154.0-v0.161.0 archives.
CORE_VERSION = "v0.153.0"
CORE_STABLE_VERSION = "v1.59.0"
CONTRIB_VERSION = "v0.153.0"
BUILDER_VERSION = CORE_VERSION
TELEMETRYGEN_VERSION = "v0.161.0"

CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib"
CORE = "go.opentelemetry.io/collector"

PEERS_DIR = Path(os.environ.get("INGESTD_PEERS_DIR", "/var/cache/ingestd/peers"))
GO = os.environ.get("INGESTD_GO", shutil.which("go") or "/usr/local/go/bin/go")

BUILDER_CONFIG = f"""\
dist:
  module: ingestd.local/otelcol-bench
  name: otelcol-bench
  description: OpenTelemetry Collector for ingestd's side-by-side benchmark
  version: {CORE_VERSION.lstrip("v")}
  output_path: OUTPUT_PATH
receivers:
  - gomod: {CORE}/receiver/otlpreceiver {CORE_VERSION}
processors:
  - gomod: {CORE}/processor/batchprocessor {CORE_VERSION}
exporters:
  - gomod: {CORE}/exporter/nopexporter {CORE_VERSION}
  - gomod: {CORE}/exporter/debugexporter {CORE_VERSION}
  - gomod: {CONTRIB}/exporter/elasticsearchexporter {CONTRIB_VERSION}
providers:
  - gomod: {CORE}/confmap/provider/envprovider {CORE_STABLE_VERSION}
  - gomod: {CORE}/confmap/provider/fileprovider {CORE_STABLE_VERSION}
"""


@dataclass(frozen=True)
class Peer:
    """A cached peer binary and how long it took to build (0 when it was found cached)."""

    name: str
    version: str
    binary: Path
    build_s: float
    cached: bool

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "binary": str(self.binary),
            "build_s": round(self.build_s, 1),
            "cached": self.cached,
        }


class PeerUnavailable(Exception):
    """A peer is not cached and may not (quick mode) or could not be built."""


def _go_env() -> dict[str, str]:
    root = PEERS_DIR / "go"
    return {
        **os.environ,
        # Our own module and build caches: nothing shared with other users of ~/go.
        "GOPATH": str(root),
        "GOMODCACHE": str(root / "pkg" / "mod"),
        "GOCACHE": str(PEERS_DIR / "go-build"),
        # No GOPROXY here: the go command takes the machine's own (`go env GOPROXY`: the
        # environment, then the user's go env file, then the toolchain's go.env).
        "GOFLAGS": "-buildvcs=false",
        # The proxy's sumdb mirror here lacks the v0.153.0 entries of the Collector's modules
        # (404), so those are taken on the proxy's word (TLS); every other module is verified.
        "GONOSUMDB": os.environ.get("GONOSUMDB", "github.com/open-telemetry,go.opentelemetry.io"),
        "CGO_ENABLED": "0",
        "PATH": f"{Path(GO).parent}:{os.environ.get('PATH', '')}",
    }


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _read_stamp(directory: Path) -> dict[str, object] | None:
    stamp = directory / "build.json"
    try:
        data: dict[str, object] = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return data


def _run(
    argv: list[str], *, cwd: Path | None = None, log: Path, env: dict[str, str] | None = None
) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(
            argv, cwd=cwd, env={**_go_env(), **(env or {})}, stdout=out, stderr=out, check=False
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise PeerUnavailable(
            f"{argv[0]} {argv[1]} failed ({done.returncode}): " + " | ".join(tail)
        )


def _go_install(module: str, version: str, directory: Path) -> None:
    bindir = directory / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    log = directory / "build.log"
    _run([GO, "install", f"{module}@{version}"], log=log, env={"GOBIN": str(bindir)})


def telemetrygen(*, build: bool = True) -> Peer:
    """The telemetrygen binary, installed with `go install` on first use."""
    directory = PEERS_DIR / f"telemetrygen-{TELEMETRYGEN_VERSION}"
    binary = directory / "bin" / "telemetrygen"
    return _ensure(
        "telemetrygen",
        TELEMETRYGEN_VERSION,
        directory,
        binary,
        build,
        lambda: _go_install(f"{CONTRIB}/cmd/telemetrygen", TELEMETRYGEN_VERSION, directory),
    )


def otelcol(*, build: bool = True) -> Peer:
    """The Collector binary built by the Collector Builder from BUILDER_CONFIG."""
    directory = PEERS_DIR / f"otelcol-bench-{CORE_VERSION}-{_key(BUILDER_CONFIG)}"
    binary = directory / "dist" / "otelcol-bench"

    def build_it() -> None:
        builder_dir = PEERS_DIR / f"builder-{BUILDER_VERSION}"
        builder = builder_dir / "bin" / "builder"
        if not builder.exists():
            _go_install(f"{CORE}/cmd/builder", BUILDER_VERSION, builder_dir)
        config = directory / "builder-config.yaml"
        config.write_text(BUILDER_CONFIG.replace("OUTPUT_PATH", str(directory / "dist")))
        _run([str(builder), f"--config={config}"], cwd=directory, log=directory / "build.log")

    return _ensure("otelcol", CORE_VERSION, directory, binary, build, build_it)


def _ensure(
    name: str, version: str, directory: Path, binary: Path, build: bool, build_it: object
) -> Peer:
    stamp = _read_stamp(directory)
    if binary.exists() and stamp is not None:
        return Peer(name, version, binary, float(str(stamp.get("build_s", 0))), cached=True)
    if not build:
        raise PeerUnavailable(f"{name} {version} is not cached in {directory} (quick mode)")
    if not Path(GO).exists():
        raise PeerUnavailable(f"no Go toolchain at {GO} (set INGESTD_GO)")
    directory.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    assert callable(build_it)
    build_it()
    took = time.monotonic() - began
    if not binary.exists():
        raise PeerUnavailable(f"{name}: build finished but {binary} is missing")
    (directory / "build.json").write_text(
        json.dumps({"name": name, "version": version, "build_s": round(took, 1)})
    )
    return Peer(name, version, binary, took, cached=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "status"])
    args = parser.parse_args()
    for make in (telemetrygen, otelcol):
        try:
            peer = make(build=args.action == "install")
        except PeerUnavailable as exc:
            print(f"{make.__name__}: {exc}")
            if args.action == "install":
                sys.exit(1)
            continue
        state = "cached" if peer.cached else "built now"
        print(f"{peer.name} {peer.version}: {peer.binary} ({state}, build {peer.build_s:.0f} s)")


if __name__ == "__main__":
    main()
