#!/usr/bin/env bash
# Make the wasm32-wasip2 target available for building the bundled plugins.
#
# First choice: rustup's target (seconds, but its download has been seen to
# hang, hence the timeout). Fallback: Debian's Rust 1.96 with std built from
# source and trixie's wasi-libc (docs/toolchain.md explains the recipe).
# Idempotent: quick when the target is already there.
set -euo pipefail

WASI_LIBC_DIR=/opt/wasm-toolchain/wasi-libc
# GLEITZEIT_WASM_TOOLCHAIN=debian skips rustup (to test the fallback).
force_debian=${GLEITZEIT_WASM_TOOLCHAIN:-}

if [ "$force_debian" != debian ] && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "wasm32-wasip2: rustup target installed"
  exit 0
fi
if [ -f "$WASI_LIBC_DIR/usr/lib/wasm32-wasip2/libc.a" ] && [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ]; then
  echo "wasm32-wasip2: Debian fallback toolchain present"
  exit 0
fi

if [ "$force_debian" != debian ]; then
  echo "wasm32-wasip2: trying rustup target add (60 s timeout)"
  if timeout 60 rustup target add wasm32-wasip2; then
    exit 0
  fi
fi

echo "wasm32-wasip2: rustup failed or hung; installing the Debian fallback" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the fallback installs Debian packages and needs root (or run 'rustup target add wasm32-wasip2' yourself)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends rustc-web cargo-web rust-web-src rust-web-llvm
apt-get install -y -qq --no-install-recommends "$(basename "$(readlink /usr/bin/rust-lld)")"

# trixie's wasi-libc has wasm32-wasip2/libc.a (bookworm's is preview1 only).
# Fetch it with a private apt state so the system's sources stay untouched.
state=$(mktemp -d)
# The system's own Debian mirror (the one this machine can reach).
mirror=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true) \
  | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
echo "deb $mirror trixie main" > "$state/sources.list"
opts=(-o Dir::Etc::sourcelist="$state/sources.list" -o Dir::Etc::sourceparts=/nonexistent
      -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache")
apt-get "${opts[@]}" update -qq
(cd "$state" && apt-get "${opts[@]}" download wasi-libc)
mkdir -p "$WASI_LIBC_DIR"
dpkg-deb -x "$state"/wasi-libc_*.deb "$WASI_LIBC_DIR"
rm -rf "$state"
test -f "$WASI_LIBC_DIR/usr/lib/wasm32-wasip2/libc.a"
echo "wasm32-wasip2: Debian fallback installed"
