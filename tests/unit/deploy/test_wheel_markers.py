"""deploy/wheel_markers.py: what a host-built wheelhouse lacks for the image's own interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.unit.deploy.scripts import DEPLOY, load_script

SCRIPT = DEPLOY / "wheel_markers.py"
wheel_markers = load_script("wheel_markers")


def wheel(directory: Path, name: str, *requires: str) -> None:
    dist = name.replace("-", "_")
    with zipfile.ZipFile(directory / f"{dist}-1.0-py3-none-any.whl", "w") as archive:
        lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
        lines += [f"Requires-Dist: {r}" for r in requires]
        archive.writestr(
            f"{dist}-1.0.dist-info/METADATA", "\n".join(lines) + "\n\nA description.\n"
        )


def env(full_version: str) -> dict[str, str]:
    return {
        **wheel_markers.marker_environment(),
        "python_full_version": full_version,
        "python_version": ".".join(full_version.split(".")[:2]),
    }


def test_a_marker_for_an_older_patch_release_is_found(tmp_path: Path) -> None:
    """redis's async-timeout (below 3.11.3) is missing for 3.11.2, not for the host's 3.11.7."""
    wheel(tmp_path, "redis", 'async-timeout>=4.0.3; python_full_version < "3.11.3"')
    wheel(tmp_path, "psycopg", "typing-extensions>=4.6", 'psycopg-binary==1.0; extra == "binary"')
    wheel(tmp_path, "typing-extensions")
    assert wheel_markers.missing(tmp_path, env("3.11.2")) == ["async-timeout>=4.0.3"]
    assert wheel_markers.missing(tmp_path, env("3.11.7")) == []


def test_names_are_compared_canonically(tmp_path: Path) -> None:
    """A wheel named typing_extensions satisfies a requirement on Typing.Extensions."""
    wheel(tmp_path, "app", "Typing.Extensions>=4")
    wheel(tmp_path, "typing-extensions")
    assert wheel_markers.missing(tmp_path, env("3.11.2")) == []


def test_env_command_prints_this_interpreters_markers() -> None:
    """`python3 - env < wheel_markers.py` (how image.sh asks the base image) prints JSON."""
    out = subprocess.run(
        [sys.executable, "-", "env"],
        input=SCRIPT.read_text(),
        capture_output=True,
        text=True,
        check=True,
    )
    markers = json.loads(out.stdout)
    assert markers["python_full_version"] == ".".join(map(str, sys.version_info[:3]))
    assert markers["implementation_name"] == "cpython"
