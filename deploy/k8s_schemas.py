"""Make self-contained Kubernetes JSON schemas for kubeconform, offline (used by deploy/lint.sh).

kubeconform fetches its schemas from GitHub, which this project cannot reach. The PyPI package
kubernetes-validate ships the same schemas, generated from Kubernetes' OpenAPI spec, one file
per kind and version, but "local": each file refers to a shared `_definitions.json` by an
absolute URL (`/api/_definitions.json#/$defs/...` under the `https://kubernetes.io/` id) that
kubeconform would try to download. This reads the strict schemas of one Kubernetes version
from that package's wheel and writes every top-level kind as a "standalone" file, with the
definitions it needs (transitively) inlined under `$defs`: the layout kubeconform reads with

    -schema-location 'DEST/{{ .ResourceKind }}{{ .KindSuffix }}.json'

Usage: k8s_schemas.py WHEEL KUBERNETES_VERSION DEST_DIR
  e.g. k8s_schemas.py kubernetes_validate-1.37.0-py3-none-any.whl 1.32.0 v1.32.0-standalone-strict
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

_REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(?P<name>.+)$")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("\n".join(__doc__.strip().splitlines()[-2:]), file=sys.stderr)
        return 2
    wheel, version, dest = argv[0], argv[1], Path(argv[2])
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
    with zipfile.ZipFile(wheel) as zf:
        files = {
            name.removeprefix(prefix): json.loads(zf.read(name))
            for name in zf.namelist()
            if name.startswith(prefix) and name.endswith(".json")
        }
    if "_definitions.json" not in files:
        print(f"k8s_schemas: {wheel} has no schemas for Kubernetes {version}", file=sys.stderr)
        return 1
    definitions = files.pop("_definitions.json")["$defs"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Written beside DEST and renamed into place: an interrupted run leaves no half set that a
    # later run would take for complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    written = 0
    for name, schema in sorted(files.items()):
        # Only the top-level kinds (Deployment, Service, ...) are ever looked up by kubeconform.
        if "x-kubernetes-group-version-kind" not in schema:
            continue
        (staging / name).write_text(json.dumps(standalone(schema, definitions)))
        written += 1
    if written == 0:
        shutil.rmtree(staging)
        print(f"k8s_schemas: no kind schemas for Kubernetes {version} in {wheel}", file=sys.stderr)
        return 1
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    print(f"k8s_schemas: {written} standalone schemas in {dest}")
    return 0


def standalone(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """*schema* with its references pointing at its own `$defs`, which hold all it needs."""
    needed: dict[str, Any] = {}
    pending = list(_refs(schema))
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed[name] = definitions[name]
        pending.extend(_refs(needed[name]))
    out: dict[str, Any] = _rewrite(schema)
    out.pop("$id", None)
    out["$defs"] = {name: _rewrite(body) for name, body in sorted(needed.items())}
    return out


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            match = _REF.match(ref)
            if match is None:
                raise ValueError(f"unexpected $ref {ref!r}")
            found.append(match["name"])
        for value in node.values():
            found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: _rewrite(value) for key, value in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str):
            match = _REF.match(ref)
            assert match is not None  # _refs() has checked every reference already
            out["$ref"] = f"#/$defs/{match['name']}"
        return out
    if isinstance(node, list):
        return [_rewrite(value) for value in node]
    return node


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
