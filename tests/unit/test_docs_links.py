"""Every relative link and #anchor in README.md and docs/**/*.md leads somewhere.

A link is followed as GitHub would: the path relative to the page (a file or a folder must
exist), and the anchor against the headings of the target page, slugged by GitHub's rules
(lower case; punctuation other than `-` and `_` dropped; each space one `-`; a repeated
heading gets `-1`, `-2`, ...). Links with a scheme (`https:`, `mailto:`) are not followed.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text, before de-duplication."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor the headings of *page* define, duplicates numbered as GitHub numbers them."""
    seen: Counter[str] = Counter()
    found = set()
    for line in prose_lines(page.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def links(page: Path) -> list[str]:
    """The targets of the inline links and images of *page*, code spans and blocks left out."""
    prose = "\n".join(prose_lines(page.read_text(encoding="utf-8")))
    return _LINK.findall(_CODE_SPAN.sub("", prose))  # a link's text may wrap onto the next line


def broken(page: Path) -> list[str]:
    """The links of *page* whose file, folder or heading anchor does not exist."""
    problems = []
    for target in links(page):
        if not target or _SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with this anchor in {resolved.name}")
    return problems


def test_the_docs_pages_are_found() -> None:
    """The pages checked include the README, the docs index and the dated reports."""
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/README.md", "docs/configuration.md"} <= names
    assert any(name.startswith("docs/reports/") for name in names)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    """Each relative link of the page reaches an existing file and, if it has one, heading."""
    assert broken(page) == []


def test_the_readme_links_every_docs_page() -> None:
    """README.md's "where to read next" reaches every page under docs/."""
    readme = ROOT / "README.md"
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(readme)}
    missing = [
        page.relative_to(ROOT).as_posix() for page in PAGES[1:] if page.resolve() not in linked
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Receiver (OTLP/HTTP)", "receiver-otlphttp"),
        ("Contract (TimescaleDB / PostgreSQL)", "contract-timescaledb--postgresql"),
        ("The sink (`sinks.elasticsearch`)", "the-sink-sinkselasticsearch"),
        ("Columns narrower than OTLP's fields", "columns-narrower-than-otlps-fields"),
        ("Tenants, authentication and rate limits", "tenants-authentication-and-rate-limits"),
        ("`make lint`", "make-lint"),
        ("Redis_state & [links](x.md)", "redis_state--links"),
    ],
)
def test_slugs_follow_github(heading: str, anchor: str) -> None:
    """Headings slug as GitHub renders their anchors."""
    assert slug(heading) == anchor


def test_a_repeated_heading_is_numbered(tmp_path: Path) -> None:
    """The second heading of the same text gets `-1`, and a missing anchor is reported."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Metrics\n\n## Metrics\n\n```\n# not a heading\n```\n"
        "[ok](#metrics-1) [bad](#not-a-heading) [gone](other.md) `[code](nowhere.md)` [a\n"
        "wrapped link](#wrapped)\n",
        encoding="utf-8",
    )
    assert anchors(page) == {"metrics", "metrics-1"}
    assert broken(page) == [
        "#not-a-heading: no heading with this anchor in page.md",
        "other.md: no such file",
        "#wrapped: no heading with this anchor in page.md",
    ]
