#!/usr/bin/env bash
# Build every plugin under plugins/ into a wasm32-wasip2 component.
#
# Usage: scripts/build-plugins.sh [TARGET_DIR [CRATES_DIR]]
#   TARGET_DIR defaults to target/wasm; CRATES_DIR to plugins (the bundled
#   ones; the tests build tests/fixtures/plugins the same way).
# Output: TARGET_DIR/wasm32-wasip2/release/NAME.wasm
#
# host/build.rs runs this to embed the bundled plugins, so it must not inherit
# the outer cargo's compiler settings (they describe the host build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${1:-$root/target/wasm}
crates_dir=${2:-$root/plugins}
unset RUSTC RUSTDOC RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTFLAGS CARGO_ENCODED_RUSTFLAGS \
      CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR \
      CARGO_PRIMARY_PACKAGE CARGO_MANIFEST_DIR CARGO_MANIFEST_PATH

packages=()
for manifest in "$crates_dir"/*/Cargo.toml; do
  packages+=(-p "$(basename "$(dirname "$manifest")")")
done

WASI_LIBC_DIR=/opt/wasm-toolchain/wasi-libc
cd "$root"
# Plugins ship without debug info: smaller components compile faster at load.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo
if [ "${GLEITZEIT_WASM_TOOLCHAIN:-}" != debian ] && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  cargo build --quiet --release --target wasm32-wasip2 --target-dir "$target_dir" "${packages[@]}"
elif [ -f "$WASI_LIBC_DIR/usr/lib/wasm32-wasip2/libc.a" ]; then
  unset RUSTUP_TOOLCHAIN
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
  CARGO_UNSTABLE_BUILD_STD=std,panic_abort CARGO_BUILD_TARGET=wasm32-wasip2 \
  CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-L native=$WASI_LIBC_DIR/usr/lib/wasm32-wasip2 -C link-arg=-lwasi-emulated-pthread" \
    /usr/bin/cargo build --quiet --release --target-dir "$target_dir" "${packages[@]}"
else
  echo "error: no wasm32-wasip2 toolchain; run scripts/setup-wasm-target.sh first" >&2
  exit 1
fi
