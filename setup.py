"""Only what pyproject.toml cannot say: the top-level schema/ travels as ingestd.schema_files."""

from setuptools import find_packages, setup

# Folders of data, not code: listed so setuptools does not warn that they look like packages.
_DATA = [f"ingestd.schema_files.{store}" for store in ("postgres", "elasticsearch", "prisma")]

setup(
    packages=[*find_packages(include=["ingestd", "ingestd.*"]), "ingestd.schema_files", *_DATA],
    package_dir={"ingestd.schema_files": "schema"},
)
