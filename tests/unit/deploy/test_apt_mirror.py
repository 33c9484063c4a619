"""deploy/apt_mirror.sh: the Debian mirror comes from the machine's own apt sources, both forms."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "deploy" / "apt_mirror.sh"

# The layout Debian 12 images ship: one deb822 file, the archive and its security suite.
DEB822 = """\
Types: deb
# a comment between fields
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
"""

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.example/debian/ bookworm main
deb http://one.example/debian-security bookworm-security main
"""


def mirror(
    tmp_path: Path,
    *,
    list_text: str | None = None,
    parts: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    sources_list = tmp_path / "sources.list"
    if list_text is not None:
        sources_list.write_text(list_text)
    parts_dir = tmp_path / "sources.list.d"
    parts_dir.mkdir(exist_ok=True)
    for name, text in (parts or {}).items():
        (parts_dir / name).write_text(text)
    command = f'. {SCRIPT} && apt_mirror_uri "$1" "$2" bookworm'
    environ = {k: v for k, v in os.environ.items() if k != "INGESTD_APT_MIRROR"}
    return subprocess.run(
        ["bash", "-c", command, "apt_mirror", str(sources_list), str(parts_dir)],
        capture_output=True,
        text=True,
        check=False,
        env={**environ, **(env or {})},
    )


def test_deb822_takes_the_release_suite_not_security_or_updates(tmp_path: Path) -> None:
    """A deb822 file yields the URI of the paragraph whose suites hold the bare codename."""
    security_first = DEB822.split("\n\n")[1] + "\n" + DEB822.split("\n\n")[0]
    out = mirror(tmp_path, parts={"debian.sources": security_first})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "http://mirror.example/debian\n"


def test_one_line_form_with_options_and_trailing_slash(tmp_path: Path) -> None:
    """The one-line form skips comments and [options] and drops the URI's trailing slash."""
    out = mirror(tmp_path, list_text=ONE_LINE)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "http://one.example/debian\n"


def test_sources_list_comes_before_sources_list_d(tmp_path: Path) -> None:
    """apt's own order: sources.list first, then sources.list.d by file name."""
    (tmp_path / "both").mkdir()
    out = mirror(tmp_path / "both", list_text=ONE_LINE, parts={"debian.sources": DEB822})
    assert out.stdout == "http://one.example/debian\n"
    (tmp_path / "parts").mkdir()
    parts = {
        "b.list": "deb http://b.example/debian bookworm main\n",
        "a.sources": DEB822.replace("mirror.example", "a.example"),
    }
    out = mirror(tmp_path / "parts", parts=parts)
    assert out.stdout == "http://a.example/debian\n"


def test_disabled_and_other_suites_and_continuations(tmp_path: Path) -> None:
    """`Enabled: no` and foreign suites are skipped; a field may continue on indented lines."""
    text = (
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb\nURIs: https://nodesource.example/node_20.x\nSuites: nodistro\n\n"
        "Types: deb deb-src\nURIs:\n http://on.example/debian\nSuites: trixie\n bookworm\n"
    )
    out = mirror(tmp_path, parts={"x.sources": text, "y.list.disabled": ONE_LINE})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "http://on.example/debian\n"


def test_no_source_for_the_release_is_a_clear_error(tmp_path: Path) -> None:
    """Without a matching source it exits 1 and says how to name a mirror."""
    out = mirror(tmp_path, list_text="deb http://x.example/debian trixie main\n")
    assert out.returncode == 1
    assert out.stdout == ""
    assert "no enabled apt source for suite bookworm" in out.stderr
    assert "INGESTD_APT_MIRROR" in out.stderr


def test_explicit_mirror_wins(tmp_path: Path) -> None:
    """INGESTD_APT_MIRROR overrides the apt configuration (for a machine without one)."""
    out = mirror(tmp_path, env={"INGESTD_APT_MIRROR": "http://explicit.example/debian/"})
    assert out.stdout == "http://explicit.example/debian\n"


def test_timescaledb_source_line_uses_the_mirror_with_trixie(tmp_path: Path) -> None:
    """The stack's trixie deb-src entry is built on the mirror apt_mirror_uri found."""
    script = ROOT / "deploy" / "stack" / "timescaledb.sh"
    out = subprocess.run(
        [
            "bash",
            "-c",
            f'CACHE_DIR="$1" LOG_DIR="$1"; . {script}; ts_src_line http://m.example/debian',
            "_",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.fullmatch(
        r"deb-src \[signed-by=\S+\] http://m\.example/debian trixie main\n", out.stdout
    )


# Registry and mirror hosts, written so that this file does not contain them itself.
HOSTS = [
    r"deb\.debian\.org",
    r"security\.debian\.org",
    r"snapshot\.debian\.org",
    r"proxy\.golang\.org",
    r"sum\.golang\.org",
    r"pypi\.org",
    r"pypi\.python\.org",
    r"files\.pythonhosted\.org",
    r"registry\.npmjs\.org",
    r"repo1\.maven\.org",
    r"repo\.maven\.apache\.org",
    r"static\.crates\.io",
    r"index\.crates\.io",
    r"crates\.io/api",
]


def test_no_registry_host_is_written_in_the_repository() -> None:
    """No tracked file names a package registry's or mirror's host: clients use their own config."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    pattern = "|".join(HOSTS)
    out = subprocess.run(
        ["git", "-C", str(ROOT), "grep", "-n", "-i", "-E", pattern],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1, f"registry hosts in the repository:\n{out.stdout}"
