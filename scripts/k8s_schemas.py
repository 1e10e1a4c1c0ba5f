"""Regenerate the JSON schemas that tests/unit/test_k8s_manifests.py checks deploy/k8s/ against.

kubeconform reads them from deploy/k8s/schemas/ and never from the network. Each is strict (an
unknown field is an error) and self-contained, for only the kinds deploy/k8s/ uses:

- Kubernetes' own kinds, from the PyPI package kubernetes-validate (its strict schemas, which refer to
  one shared file of definitions): each kind with the definitions it reaches, without descriptions.
- ServiceMonitor and KEDA's kinds, from the CRDs in those projects' Go modules: the CRD's OpenAPI
  schema, made strict as kubeconform's openapi2jsonschema does.

Run `.venv/bin/python scripts/k8s_schemas.py` after changing a version or adding a kind below; it
downloads the package with pip and the modules with `go mod download` (kept in their usual caches).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "schemas"

KUBERNETES_VALIDATE = "1.37.0"
# The oldest Kubernetes deploy/k8s supports (the preStop `sleep` action is on by default from 1.30)
# and the newest kubernetes-validate knows: a field added or removed in between fails one of them.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# (kind, apiVersion) of every built-in kind deploy/k8s renders.
KINDS = (
    ("ConfigMap", "v1"),
    ("Secret", "v1"),
    ("Service", "v1"),
    ("Deployment", "apps/v1"),
    ("PodDisruptionBudget", "policy/v1"),
    ("NetworkPolicy", "networking.k8s.io/v1"),
)
# (Go module, version, CRD file in it, versions of the CRD to keep).
CRDS = (
    (
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        ("v1",),
    ),
    ("github.com/kedacore/keda/v2", "v2.21.0", "config/crd/bases/keda.sh_scaledobjects.yaml", ("v1alpha1",)),
    (
        "github.com/kedacore/keda/v2",
        "v2.21.0",
        "config/crd/bases/keda.sh_triggerauthentications.yaml",
        ("v1alpha1",),
    ),
)

# Keywords whose value is a map of names to schemas, and those whose value is a schema or a list.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "contains", "additionalItems", "if", "then", "else")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        wheel = _download_wheel(Path(work))
        for version in KUBERNETES_VERSIONS:
            _write_builtin_schemas(wheel, version)
    for module, version, crd_file, crd_versions in CRDS:
        _write_crd_schemas(_module_dir(module, version) / crd_file, crd_versions)


def kind_file(kind: str, api_version: str) -> str:
    """The file name kubeconform looks for: `deployment-apps-v1.json`, `service-v1.json`."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def _download_wheel(directory: Path) -> zipfile.ZipFile:
    package = f"kubernetes-validate=={KUBERNETES_VALIDATE}"
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*pip, "--dest", str(directory), package], check=True)
    (path,) = directory.glob("kubernetes_validate-*.whl")
    return zipfile.ZipFile(path)


def _write_builtin_schemas(wheel: zipfile.ZipFile, version: str) -> None:
    source = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict"
    definitions = json.loads(wheel.read(f"{source}/_definitions.json"))["$defs"]
    target = SCHEMAS / "kubernetes" / f"v{version}-standalone-strict"
    target.mkdir(parents=True, exist_ok=True)
    for kind, api_version in KINDS:
        name = kind_file(kind, api_version)
        schema = _local_refs(json.loads(wheel.read(f"{source}/{name}")))
        schema.pop("$id", None)
        reached: dict[str, Any] = {}
        pending = _refs(schema)
        while pending:
            ref = pending.pop()
            if ref not in reached:
                reached[ref] = _local_refs(definitions[ref])
                pending |= _refs(reached[ref]) - reached.keys()
        schema["$defs"] = dict(sorted(reached.items()))
        _write(target / name, _without_descriptions(schema))


def _local_refs(schema: Any) -> Any:
    """`/api/_definitions.json#/$defs/X` becomes `#/$defs/X`: the definitions travel in the file."""
    text = json.dumps(schema).replace('"/api/_definitions.json#/$defs/', '"#/$defs/')
    return json.loads(text)


def _refs(schema: Any) -> set[str]:
    return set(re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(schema)))


def _module_dir(module: str, version: str) -> Path:
    answer = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True
    )
    info = json.loads(answer.stdout or "{}")
    if answer.returncode != 0 or "Dir" not in info:
        raise SystemExit(f"go mod download {module}@{version}: {info.get('Error') or answer.stderr}")
    return Path(info["Dir"])


def _write_crd_schemas(path: Path, versions: tuple[str, ...]) -> None:
    crd = yaml.safe_load(path.read_text())
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for entry in crd["spec"]["versions"]:
        if entry["name"] in versions:
            schema = _strict(entry["schema"]["openAPIV3Schema"])
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            _write(
                SCHEMAS / "crds" / group / f"{kind.lower()}_{entry['name']}.json",
                _without_descriptions(schema),
            )


def _strict(schema: Any) -> Any:
    """Every object with declared properties takes no others, unless it keeps unknown fields."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict_value(key, value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _strict_value(key: str, value: Any) -> Any:
    if key in _SCHEMA_MAPS:
        return {name: _strict(sub) for name, sub in value.items()}
    if key in _SCHEMA_VALUES or key in _SCHEMA_LISTS:
        return _strict(value)
    return value


def _without_descriptions(schema: Any) -> Any:
    """The schema without its prose (most of its size); a property named `description` stays."""
    if isinstance(schema, list):
        return [_without_descriptions(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: _without_descriptions(sub) for name, sub in value.items()}
        elif key in _SCHEMA_VALUES or key in _SCHEMA_LISTS:
            out[key] = _without_descriptions(value)
        else:
            out[key] = value
    return out


def _write(path: Path, schema: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path.relative_to(SCHEMAS.parents[2])}")


if __name__ == "__main__":
    main()
