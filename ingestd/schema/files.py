"""Where the storage contract's files are: the top-level `schema/` folder, installed as package
data under the name `ingestd.schema_files` (setup.py maps it), read through importlib.resources.

`schema/postgres/` holds the numbered migrations, `schema/elasticsearch/` the templates'
defaults as JSON, `schema/prisma/` the Prisma schema Deep Eyes' client is generated from.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from ingestd.errors import SchemaError

PACKAGE = "ingestd.schema_files"


def directory(store: str) -> Path:
    """The folder of one store's files (`postgres`, `elasticsearch`, `prisma`) on disk.

    Raises SchemaError when ingestd is installed in a form without real files (a zip import),
    which the migration loader and the user's `curl -d @file` both need.
    """
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError as exc:
        raise SchemaError(
            f"the schema files are not installed (package {PACKAGE} is missing): reinstall ingestd"
        ) from exc
    folder = root.joinpath(store)
    if not isinstance(folder, Path) or not folder.is_dir():
        raise SchemaError(
            f"{PACKAGE}/{store} is not a folder on disk ({folder}): reinstall ingestd"
        )
    return folder


def read_json(store: str, name: str) -> dict[str, Any]:
    """One JSON file of *store*, parsed; SchemaError naming the file when it is not an object."""
    path = directory(store) / name
    try:
        body = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SchemaError(f"cannot read {path}: {exc}") from exc
    if not isinstance(body, dict):
        raise SchemaError(f"{path}: expected a JSON object")
    return body
