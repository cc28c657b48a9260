#!/usr/bin/env bash
# Run cargo for the wasm32-wasip2 target with the toolchain that
# scripts/setup-wasm-target.sh made available: rustup's target, or the Debian
# fallback (docs/toolchain.md).
#
# Usage: scripts/wasm-cargo.sh CARGO_ARGS...
#   e.g. scripts/wasm-cargo.sh build --release --manifest-path my-plugin/Cargo.toml
#
# It must not inherit an outer cargo's compiler settings (host/build.rs runs
# it from inside the host's build, whose settings describe the host).
set -euo pipefail
unset RUSTC RUSTDOC RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTFLAGS CARGO_ENCODED_RUSTFLAGS \
      CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR \
      CARGO_PRIMARY_PACKAGE CARGO_MANIFEST_DIR CARGO_MANIFEST_PATH

WASI_LIBC_DIR=/opt/wasm-toolchain/wasi-libc
if [ "${GLEITZEIT_WASM_TOOLCHAIN:-}" != debian ] && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  exec cargo "$@" --target wasm32-wasip2
elif [ -f "$WASI_LIBC_DIR/usr/lib/wasm32-wasip2/libc.a" ]; then
  unset RUSTUP_TOOLCHAIN
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
  CARGO_UNSTABLE_BUILD_STD=std,panic_abort CARGO_BUILD_TARGET=wasm32-wasip2 \
  CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-L native=$WASI_LIBC_DIR/usr/lib/wasm32-wasip2 -C link-arg=-lwasi-emulated-pthread" \
    exec /usr/bin/cargo "$@"
else
  echo "error: no wasm32-wasip2 toolchain; run scripts/setup-wasm-target.sh first" >&2
  exit 1
fi
