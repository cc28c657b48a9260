#!/usr/bin/env bash
# The whole test suite: make the wasm target available, then run every test
# (unit, property and integration; host/build.rs builds the bundled plugins).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-wasm-target.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --doc --quiet
else
  cargo test "$@"
fi
