#!/usr/bin/env bash
# Build the bundled python/v1 plugin (the Python SDK's run-python example)
# with componentize-py, and write the describe() answer it gives, read from
# the same source under CPython (the host registers it without compiling
# the 19 MB component until its first call).
#
# Usage: scripts/build-python-plugin.sh OUT_DIR
# Output: OUT_DIR/python.wasm, its SHA-256 (python.sha256, hex) and
# OUT_DIR/python.spec.json.
# Exit status 3 (and nothing built) when componentize-py is not installed:
# the host is then built without python/v1 (`pip install
# componentize-py==VERSION`, the version in tests/python/requirements.txt).
#
# host/build.rs runs this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: build-python-plugin.sh OUT_DIR}
project="$root/plugin-sdk/python/examples/run-python"
export PYTHONPATH="$root/plugin-sdk/python"
# No __pycache__ in plugin-sdk/: cargo would see it changed and run
# host/build.rs again at every build.
export PYTHONDONTWRITEBYTECODE=1
python3 -c 'import componentize_py' 2>/dev/null || exit 3
mkdir -p "$out"
python3 -m gleitzeit_plugin.build build "$project" -o "$out/python.wasm.partial" >/dev/null
mv "$out/python.wasm.partial" "$out/python.wasm"
sha256sum "$out/python.wasm" | cut -c1-64 > "$out/python.sha256"
cd "$project"
python3 - "$out/python.spec.json" <<'PY'
import json
import sys

import app

spec = app.provider.describe()
for method in spec["methods"]:
    method["params_schema"] = json.dumps(method["params_schema"])
with open(sys.argv[1], "w") as out:
    json.dump(spec, out)
PY
