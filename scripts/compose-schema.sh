#!/usr/bin/env bash
# Refresh tests/schemas/compose-spec.json: the Compose Specification's JSON schema, which
# tests/unit/test_compose.py checks docker-compose.yml against (`docker compose` itself may not be
# installed). Taken from the module `docker compose` is built on, through the Go module proxy.
# Usage: scripts/compose-schema.sh [VERSION]          (default: latest)
set -euo pipefail
cd "$(dirname "$0")/.."

module="github.com/compose-spec/compose-go/v2"
version="${1:-latest}"
command -v go >/dev/null || { echo "compose-schema: Go is needed to fetch $module" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Outside any module; `go mod download` fails when the module wants a newer Go than this one to
# build, after fetching its zip, which is all that is needed here: the JSON below says.
(cd "$work" && GOTOOLCHAIN=local go mod download -json "$module@$version" >"$work/download.json") || true

python3 - "$work/download.json" "$module" <<'PY'
import json
import sys
import zipfile
from pathlib import Path

download, module = json.loads(Path(sys.argv[1]).read_text()), sys.argv[2]
if not download.get("Zip"):
    sys.exit(f"compose-schema: {download.get('Error', 'no zip downloaded')}")
version = download["Version"]
with zipfile.ZipFile(download["Zip"]) as archive:
    schema = archive.read(f"{module}@{version}/schema/compose-spec.json")
json.loads(schema)  # it must parse
Path("tests/schemas/compose-spec.json").write_bytes(schema)
# Its line in the README says where it came from; the README's other lines stay as they are.
readme = Path("tests/schemas/README.md")
lines = readme.read_text().splitlines() if readme.exists() else ["# Schemas the unit tests validate against", ""]
entry = (
    f"- `compose-spec.json`: the Compose Specification, from `{module}` {version} "
    f"(`schema/compose-spec.json`, module sum `{download['Sum']}`); refresh: `scripts/compose-schema.sh`."
)
lines = [line for line in lines if not line.startswith("- `compose-spec.json`")] + [entry]
readme.write_text("\n".join(lines) + "\n")
print(f"tests/schemas/compose-spec.json: {module} {version}")
PY
