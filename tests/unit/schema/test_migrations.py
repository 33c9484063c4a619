"""Migration files: names, tiers, order, checksums, and what an apply would run."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestd.errors import SchemaError
from ingestd.schema import migrations
from ingestd.schema.migrations import DEFAULT_DIR, Migration, checksum, for_tier, parse_name, plan
from ingestd.schema.tiers import Tier


def test_untagged_file_is_for_every_tier() -> None:
    """NNN_name.sql applies to full, apache and postgres."""
    assert parse_name("001_base.sql") == (1, frozenset(Tier))


@pytest.mark.parametrize(
    ("name", "tiers"),
    [
        ("010_x.full.sql", {Tier.FULL}),
        ("010_x.timescaledb.sql", {Tier.FULL, Tier.APACHE}),
        ("010_x.apache+postgres.sql", {Tier.APACHE, Tier.POSTGRES}),
    ],
)
def test_tags_select_tiers(name: str, tiers: set[Tier]) -> None:
    """Tier tags, alone or joined by +, select the tiers a file is for."""
    assert parse_name(name)[1] == tiers


@pytest.mark.parametrize("name", ["1_x.sql", "010-x.sql", "010_X.sql", "010_x.cloud.sql"])
def test_bad_names_are_refused(name: str) -> None:
    """Names without a 3-digit number, with capitals or unknown tags are errors."""
    with pytest.raises(ValueError, match=r"expected|unknown tier tag"):
        parse_name(name)


def test_load_reports_every_bad_name_at_once(tmp_path: Path) -> None:
    """A directory with two bad files names both in one error."""
    for name in ("001_ok.sql", "2_bad.sql", "003_x.nope.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(SchemaError) as info:
        migrations.load(tmp_path)
    assert "2_bad.sql" in str(info.value)
    assert "003_x.nope.sql" in str(info.value)


def test_shipped_files_give_each_tier_one_table_definition() -> None:
    """The repo's files load, and each tier gets exactly one metrics/traces and rollups file."""
    shipped = migrations.load(DEFAULT_DIR)
    for tier in Tier:
        names = [m.name for m in for_tier(shipped, tier)]
        assert sum(n.startswith("010_metrics_traces") for n in names) == 1, (tier, names)
        assert sum(n.startswith("030_rollups") for n in names) == 1, (tier, names)
        assert names == sorted(names)
    assert any("compression" in m.name for m in for_tier(shipped, Tier.FULL))
    assert not any("compression" in m.name for m in for_tier(shipped, Tier.APACHE))


def test_order_is_by_number_then_name(tmp_path: Path) -> None:
    """Files run by number (10 after 9), then by name."""
    for name in ("010_b.sql", "009_z.sql", "010_a.sql"):
        (tmp_path / name).write_text("SELECT 1;")
    assert [m.name for m in migrations.load(tmp_path)] == ["009_z.sql", "010_a.sql", "010_b.sql"]


def test_checksum_ignores_line_endings_only() -> None:
    """CRLF and LF give one checksum; a changed character gives another."""
    assert checksum("a;\r\nb;\r\n") == checksum("a;\nb;\n")
    assert checksum("a;\n") != checksum("b;\n")


def _m(name: str, sql: str = "SELECT 1;") -> Migration:
    number, tiers = parse_name(name)
    return Migration(name, number, tiers, sql, checksum(sql))


def test_plan_runs_only_new_files() -> None:
    """Applied unchanged files are counted; only the new one is pending."""
    files = [_m("001_a.sql"), _m("002_b.sql")]
    result = plan(files, {"001_a.sql": files[0].checksum})
    assert [m.name for m in result.pending] == ["002_b.sql"]
    assert (result.applied, result.changed, result.missing) == (1, [], [])


def test_plan_finds_changed_and_missing_files() -> None:
    """A changed applied file and a vanished applied file are both reported."""
    files = [_m("001_a.sql", "SELECT 2;")]
    result = plan(files, {"001_a.sql": checksum("SELECT 1;"), "000_gone.sql": "x"})
    assert result.changed == ["001_a.sql"]
    assert result.missing == ["000_gone.sql"]
    assert result.applied == 0
