"""The storage contract's files are found through the installed package ingestd.schema_files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestd.errors import SchemaError
from ingestd.schema import files, migrations

REPO_SCHEMA = Path(__file__).resolve().parents[3] / "schema"


def test_each_store_folder_is_the_repos_schema_folder() -> None:
    """In a checkout, the package data is the top-level schema/ itself (no copy to drift)."""
    for store in ("postgres", "elasticsearch", "prisma"):
        assert files.directory(store).resolve() == (REPO_SCHEMA / store).resolve()
    assert files.directory("postgres") == migrations.DEFAULT_DIR


def test_missing_package_data_is_a_schema_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the package data the error says to reinstall, at use, not at import."""
    monkeypatch.setattr(files, "PACKAGE", "ingestd.no_such_schema_files")
    with pytest.raises(SchemaError, match="reinstall ingestd"):
        files.directory("postgres")
    with pytest.raises(SchemaError, match="reinstall ingestd"):
        _ = migrations.DEFAULT_DIR


def test_a_json_file_that_is_not_an_object_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_json refuses a non-object and says which file."""
    (tmp_path / "elasticsearch").mkdir()
    (tmp_path / "elasticsearch" / "x.json").write_text("[1, 2]")
    monkeypatch.setattr(files, "directory", lambda store: tmp_path / store)
    with pytest.raises(SchemaError, match=r"x\.json: expected a JSON object"):
        files.read_json("elasticsearch", "x.json")
