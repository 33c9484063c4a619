"""What a wheelhouse lacks for another interpreter (used by deploy/wheelhouse.sh).

pip resolves dependencies for the interpreter that runs it, and environment markers make that
choice depend on the exact version: redis needs async-timeout below Python 3.11.3, so a
wheelhouse built by the host's 3.11.7 lacks a wheel that Debian bookworm's 3.11.2 (the image's
stand-in base) needs, and `pip install --no-index` fails in the image. Two commands:

    python3 - env < deploy/wheel_markers.py        the running interpreter's marker environment
                                                   (JSON; runs inside the base image, stdlib only)
    python3 deploy/wheel_markers.py missing DIR ENV_JSON
                                                   the requirements of DIR's wheels that ENV
                                                   selects and no wheel in DIR provides, one a line

Extras are not followed (an extra's requirements are resolved by the host's pip already).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import zipfile
from pathlib import Path


def marker_environment() -> dict[str, str]:
    """PEP 508's marker variables for this interpreter (what packaging's default_environment is)."""
    iv = sys.implementation.version
    impl_version = f"{iv.major}.{iv.minor}.{iv.micro}"
    if iv.releaselevel != "final":
        impl_version += f"{iv.releaselevel[0]}{iv.serial}"
    return {
        "implementation_name": sys.implementation.name,
        "implementation_version": impl_version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def _requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode("utf-8")
    head = text.split("\n\n", 1)[0]
    return [
        line.split(":", 1)[1].strip()
        for line in head.splitlines()
        if line.startswith("Requires-Dist:")
    ]


def missing(directory: Path, environment: dict[str, str]) -> list[str]:
    """Requirements (without markers) that *environment* selects and no wheel in *directory* has."""
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

    wheels = sorted(directory.glob("*.whl"))
    present = {canonicalize_name(w.name.split("-", 1)[0]) for w in wheels}
    wanted: dict[str, str] = {}
    for wheel in wheels:
        for text in _requires_dist(wheel):
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**environment, "extra": ""}):
                continue
            name = canonicalize_name(req.name)
            if name not in present:
                req.marker = None
                wanted.setdefault(name, str(req))
    return sorted(wanted.values())


def main(argv: list[str]) -> int:
    if argv[:1] == ["env"]:
        print(json.dumps(marker_environment(), sort_keys=True))
        return 0
    if len(argv) == 3 and argv[0] == "missing":
        for requirement in missing(Path(argv[1]), json.loads(argv[2])):
            print(requirement)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
