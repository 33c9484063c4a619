"""The plain-text table `schema status` prints."""

from __future__ import annotations

from ingestd.schema.status import Status, render


def test_columns_align_under_their_headers() -> None:
    """Each cell starts at its column's offset; a rule separates header and rows."""
    lines = render(("a", "long header"), [("wide value", "x"), ("y", "z")])
    assert lines[0].index("long header") == lines[2].index("x") == lines[3].index("z")
    assert set(lines[1].replace(" ", "")) == {"-"}


def test_status_lines_start_with_the_tier() -> None:
    """The header block (database, tier) comes first, then the tables."""
    status = Status([("database", "h:5432/db"), ("tier", "apache")], [("m",) * 8], [])
    lines = status.lines()
    assert lines[1].split() == ["tier", "apache"]
    assert lines[3].startswith("relation")
