"""The wheel built from the repo carries the top-level schema/ as ingestd.schema_files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = "ingestd/schema_files/"


@pytest.mark.slow
def test_wheel_carries_every_schema_file(tmp_path: Path) -> None:
    """`pip wheel .` packs every file of schema/{postgres,elasticsearch,prisma}, no node_modules."""
    # The build backend (setuptools >= 77) comes from the package index through pip's own
    # configuration; pip caches it, so reruns take a few seconds.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "-w", str(tmp_path), "--no-deps", "-q"],
        check=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("ingestd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {n.removeprefix(DATA) for n in archive.namelist() if n.startswith(DATA)}
    for store, suffix in (("postgres", ".sql"), ("elasticsearch", ".json"), ("prisma", ".prisma")):
        expected = {f"{store}/{p.name}" for p in (REPO / "schema" / store).glob(f"*{suffix}")}
        assert expected, f"schema/{store} has no {suffix} file"
        assert expected <= packed, sorted(expected - packed)
    assert not any("node_modules" in name for name in packed)
    assert not any(name.startswith("ingestd/schema/postgres/") for name in archive.namelist())
