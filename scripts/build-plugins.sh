#!/usr/bin/env bash
# Build every plugin under plugins/ into a wasm32-wasip2 component.
#
# Usage: scripts/build-plugins.sh [TARGET_DIR [CRATES_DIR]]
#   TARGET_DIR defaults to target/wasm; CRATES_DIR to plugins (the bundled
#   ones; the tests build tests/fixtures/plugins the same way).
# Output: TARGET_DIR/wasm32-wasip2/release/NAME.wasm
#
# host/build.rs runs this to embed the bundled plugins; scripts/wasm-cargo.sh
# picks the toolchain and drops the outer cargo's settings.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${1:-$root/target/wasm}
crates_dir=${2:-$root/plugins}
packages=()
for manifest in "$crates_dir"/*/Cargo.toml; do
  packages+=(-p "$(basename "$(dirname "$manifest")")")
done

cd "$root"
# Plugins ship without debug info: smaller components compile faster at load.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo
exec "$root/scripts/wasm-cargo.sh" build --quiet --release --target-dir "$target_dir" "${packages[@]}"
