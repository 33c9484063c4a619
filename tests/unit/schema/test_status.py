"""The plain-text table `schema status` prints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingestd.schema import status as status_module
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


class _Rows:
    """A connection whose every query answers *rows* (enough for read_jobs)."""

    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows

    async def execute(self, *_: object) -> _Rows:
        return self

    async def fetchall(self) -> list[tuple[object, ...]]:
        return self.rows


async def test_timescaledb_job_rows_read_through_timescaledb_jobs() -> None:
    """The full tier's job rows come from timescaledb_jobs.read_jobs, by id, with the error."""
    at = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    rows = [
        (7, "policy_compression", "metrics", hour, True, None, None, None, at, 0, None),
        (3, "policy_retention", "traces", hour, True, "Failed", at, None, at + hour, 4, "boom"),
    ]
    found = await status_module._timescaledb_jobs(_Rows(rows))  # type: ignore[arg-type]
    assert found == [
        (
            "retention [3]",
            "traces",
            status_module.human(hour),
            "2026-12-04 10:00:00Z",
            "Failed: boom",
            "2026-12-04 11:00:00Z",
        ),
        (
            "compression [7]",
            "metrics",
            status_module.human(hour),
            "never",
            "-",
            "2026-12-04 10:00:00Z",
        ),
    ]
