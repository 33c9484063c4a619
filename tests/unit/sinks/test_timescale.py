"""The Timescale writer's decisions that need no server: error classes, dedup, culprits."""

from __future__ import annotations

import pytest
from psycopg import errors

from ingestd.convert import copy_binary
from ingestd.convert.common import Rows
from ingestd.errors import Rejected, SinkUnavailable
from ingestd.model import Part, PartResult
from ingestd.sinks import timescale


@pytest.mark.parametrize(
    "sqlstate",
    ["08006", "40001", "40P01", "53100", "53300", "57P01", "57014", "25006", "55P03", "42P01"],
)
def test_transient_database_errors_are_retryable(sqlstate: str) -> None:
    """Connection loss, serialization, deadlock, disk full, shutdown, read-only, no table: retry."""
    assert isinstance(timescale._classify(errors.lookup(sqlstate)("x"), "t"), SinkUnavailable)


def test_connection_errors_without_sqlstate_are_retryable() -> None:
    """A client-side connection error (no SQLSTATE) is retryable."""
    assert isinstance(timescale._classify(errors.OperationalError("gone"), "t"), SinkUnavailable)


def test_data_errors_outside_copy_are_rejected() -> None:
    """A data error PostgreSQL raises outside a COPY line is a permanent rejection."""
    assert isinstance(timescale._classify(errors.lookup("22P02")("bad"), "t"), Rejected)


def test_missing_table_message_says_to_apply_the_schema() -> None:
    """An undefined table tells the operator to run `ingestd schema apply`."""
    error = timescale._classify(errors.lookup("42P01")('relation "traces" does not exist'), "t")
    assert "schema apply" in error.message


async def part(key: bytes, rows: int = 2) -> timescale._PartState:
    payload = copy_binary.from_rows(Rows(rows=[(i,) for i in range(rows)]), ["int8"])
    return timescale._PartState(Part(payload=payload, items=rows, nbytes=1, key=key))


async def test_part_data_leaves_out_excluded_rows() -> None:
    """A part's COPY bytes without its excluded rows are the other rows' tuples, in order."""
    state = await part(b"a", 3)
    assert state.data() == state.payload().data
    state.excluded.add(1)
    assert copy_binary.decode(copy_binary.CopyRows(state.data(), [0, 14]), ["int8"]) == [(0,), (2,)]


async def test_split_skips_stored_and_repeated_keys() -> None:
    """Parts whose key the ledger holds are skipped; a key repeated in the batch is written once."""
    states = [
        await part(b"a"),
        await part(b"b"),
        await part(b"a"),
        await part(b""),
        await part(b""),
    ]
    todo, repeats = timescale._split(states, {b"b": PartResult(duplicate=True)})
    assert todo == [states[0], states[3], states[4]]
    assert repeats == {2: 0}


async def test_locate_maps_copy_line_to_part_and_row_skipping_excluded() -> None:
    """COPY line N is the N-th row sent: excluded rows and refused parts are not counted."""
    a, b, c = await part(b"a", 3), await part(b"b", 3), await part(b"c", 3)
    a.excluded.add(1)
    b.refused_whole = True
    assert timescale._locate([a, b, c], 1) == (a, 0)
    assert timescale._locate([a, b, c], 2) == (a, 2)
    assert timescale._locate([a, b, c], 3) == (c, 0)
    assert timescale._locate([a, b, c], 6) is None
    assert timescale._locate([a, b, c], None) is None


def test_dimensions_are_pending_until_remembered() -> None:
    """Dimension rows are upserted until a commit is remembered; lastSeenAt once a minute."""
    dims = timescale.Dimensions()
    rows = Rows(
        resources={2: (b"\x01{}", 0, ""), 1: (b"\x01{}", 0, "")},
        scopes={5: ("s", "", b"\x01{}", 0, "")},
        applications={"app": ("n", "", "")},
        descriptions={("app", "m"): ("gauge", "1", "")},
    )
    pending = dims.pending([rows], now=100.0)
    assert [rid for rid, _ in pending.resources] == [1, 2], "sorted: a fixed lock order"
    assert pending.scopes
    assert pending.applications
    assert pending.descriptions
    assert dims.pending([rows], now=100.0), "nothing is cached before the commit"
    dims.remember(pending, now=100.0)
    assert not dims.pending([rows], now=159.0)
    assert [a for a, _ in dims.pending([rows], now=160.0).applications] == ["app"]
    changed = Rows(descriptions={("app", "m"): ("gauge", "ms", "")})
    assert dims.pending([changed], now=101.0).descriptions == [(("app", "m"), ("gauge", "ms", ""))]


def test_writer_builds_a_binary_copy_with_explicit_columns() -> None:
    """The COPY names every column of the table in order and uses FORMAT BINARY."""
    sink = timescale.TimescaleSink.__new__(timescale.TimescaleSink)
    writer = timescale.TimescaleWriter(
        sink, table="traces", columns=[("a", "int8"), ("b", "text")], signal="traces"
    )
    assert writer._copy.as_string(None) == 'COPY "traces" ("a", "b") FROM STDIN (FORMAT BINARY)'
