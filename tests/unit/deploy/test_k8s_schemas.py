"""deploy/k8s_schemas.py: kubernetes-validate's "local" schemas -> kubeconform's standalone."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.scripts import load_script

PREFIX = "kubernetes_validate/kubernetes-json-schema/v1.32.0-local-strict/"
DEFS_URL = "/api/_definitions.json#/$defs/"


k8s_schemas = load_script("k8s_schemas")

DEFINITIONS: dict[str, Any] = {
    "Spec": {"properties": {"template": {"$ref": "#/$defs/Template"}}},
    "Template": {"properties": {"self": {"$ref": "#/$defs/Template"}, "x": {"$ref": "#/$defs/X"}}},
    "X": {"type": "string"},
    "Unused": {"type": "integer"},
}
KIND = {
    "$id": "https://kubernetes.io/api/thing/v1",
    "properties": {"spec": {"$ref": DEFS_URL + "Spec"}},
    "x-kubernetes-group-version-kind": [{"group": "", "kind": "Thing", "version": "v1"}],
}


def test_standalone_inlines_what_is_needed_and_nothing_else() -> None:
    """Every definition reachable from the kind is inlined (cycles included), the rest is not."""
    out = k8s_schemas.standalone(KIND, DEFINITIONS)
    assert sorted(out["$defs"]) == ["Spec", "Template", "X"]
    assert out["properties"]["spec"]["$ref"] == "#/$defs/Spec"
    assert out["$defs"]["Template"]["properties"]["self"]["$ref"] == "#/$defs/Template"
    assert "$id" not in out


def test_unknown_reference_is_an_error() -> None:
    """A reference to anything but the shared definitions fails loudly instead of passing."""
    kind = {"properties": {"spec": {"$ref": "https://example.com/other.json#/x"}}}
    with pytest.raises(ValueError, match="unexpected"):
        k8s_schemas.standalone(kind, DEFINITIONS)


def test_main_writes_one_file_per_kind_from_the_wheel(tmp_path: Path) -> None:
    """Reading a wheel, only top-level kinds become files, each valid standalone JSON."""
    wheel = tmp_path / "kubernetes_validate-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(PREFIX + "_definitions.json", json.dumps({"$defs": DEFINITIONS}))
        zf.writestr(PREFIX + "thing-v1.json", json.dumps(KIND))
        zf.writestr(PREFIX + "spec-v1.json", json.dumps(DEFINITIONS["Spec"]))
    dest = tmp_path / "v1.32.0-standalone-strict"
    assert k8s_schemas.main([str(wheel), "1.32.0", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["thing-v1.json"]
    written = json.loads((dest / "thing-v1.json").read_text())
    assert written["$defs"]["X"] == {"type": "string"}


def test_main_fails_for_a_version_the_wheel_lacks(tmp_path: Path) -> None:
    """Asking for a Kubernetes version the package does not ship fails and writes nothing."""
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("kubernetes_validate/__init__.py", "")
    dest = tmp_path / "out"
    assert k8s_schemas.main([str(wheel), "1.32.0", str(dest)]) == 1
    assert not dest.exists()
