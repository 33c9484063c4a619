"""Prisma 7 for the tests: installed from npm once into a cache outside the repo, a client
generated from schema/prisma/schema.prisma, and Deep Eyes' queries run through it.

The cache (INGESTD_PRISMA_CACHE, default /var/cache/ingestd/prisma) holds node_modules per
pinned version set; the repo never does. `prisma generate` needs no schema engine, but the
CLI downloads one at start unless PRISMA_SCHEMA_ENGINE_BINARY names a file, and no binary
host is reachable here: the variable points at a stub that says so if anything runs it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "schema" / "prisma" / "schema.prisma"
QUERIES = Path(__file__).resolve().parent / "prisma" / "deep_eyes_queries.ts"
# Pinned: a new Prisma is a deliberate upgrade (Prisma 7.10.1 was current on 2026-12-04).
PACKAGES = {
    "prisma": "7.10.1",
    "@prisma/client": "7.10.1",
    "@prisma/adapter-pg": "7.10.1",
    "pg": "8.23.1",
    # runs the TypeScript the `prisma-client` generator writes, as a Deep Eyes build would
    "tsx": "4.23.15",
}
_ENGINE_STUB = "#!/bin/sh\necho 'the schema engine is not needed for prisma generate' >&2\nexit 1\n"


def cache_root() -> Path:
    return Path(os.environ.get("INGESTD_PRISMA_CACHE", "/var/cache/ingestd/prisma"))


def _env(base: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PRISMA_SCHEMA_ENGINE_BINARY": str(base / "schema-engine-stub"),
        "CHECKPOINT_DISABLE": "1",  # no version check call home
        "PRISMA_HIDE_UPDATE_MESSAGE": "1",
        "NO_UPDATE_NOTIFIER": "1",
    }


def install() -> Path:
    """node_modules with PACKAGES in the cache (npm through its own configuration); its dir."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed: the Prisma test needs Node.js 20.19+")
    tag = hashlib.sha256(json.dumps(PACKAGES, sort_keys=True).encode()).hexdigest()[:12]
    base = cache_root() / f"node-{tag}"
    base.mkdir(parents=True, exist_ok=True)
    stamp = base / ".installed"
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test sessions of several worktrees share the cache
        if not stamp.exists():
            manifest = {"name": "ingestd-prisma-test", "private": True, "dependencies": PACKAGES}
            (base / "package.json").write_text(json.dumps(manifest, indent=2))
            done = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=base,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                unavailable(f"npm install failed: {done.stderr[-2000:]}")
            stub = base / "schema-engine-stub"
            stub.write_text(_ENGINE_STUB)
            stub.chmod(0o755)
            stamp.write_text(json.dumps(PACKAGES))
    return base


def generate(base: Path) -> Path:
    """A client generated from the repo's schema.prisma (copied into the cache); its dir."""
    digest = hashlib.sha256(SCHEMA.read_bytes() + QUERIES.read_bytes()).hexdigest()[:12]
    work = base / f"client-{digest}"
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (work / "generated" / "client.ts").exists():
            work.mkdir(exist_ok=True)
            shutil.copy(SCHEMA, work / "schema.prisma")
            shutil.copy(QUERIES, work / QUERIES.name)
            # Node resolves @prisma/client and the adapter from the parent's node_modules.
            done = subprocess.run(
                [str(base / "node_modules/.bin/prisma"), "generate", "--schema", "schema.prisma"],
                cwd=work,
                env=_env(base),
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"prisma generate failed:\n{done.stdout}\n{done.stderr}"
    return work


def deep_eyes_queries(work: Path, database_url: str, application_id: str) -> dict[str, Any]:
    """Run tests/integration/prisma/deep_eyes_queries.ts; its JSON answer."""
    done = subprocess.run(
        [str(work.parent / "node_modules/.bin/tsx"), QUERIES.name],
        cwd=work,
        env={**_env(work.parent), "DATABASE_URL": database_url, "APPLICATION_ID": application_id},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"the Prisma client failed:\n{done.stderr}"
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer
