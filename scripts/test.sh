#!/usr/bin/env bash
# The whole test suite: make the wasm target and the test clients available,
# then run every test (unit, property and integration; host/build.rs builds
# the bundled plugins).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-wasm-target.sh
# A real redis-server for the store tests (they start their own instances).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null; }
  else
    echo "error: the store tests need redis-server (e.g. sudo apt-get install redis-server)" >&2
    exit 1
  fi
fi
# Real peers the tests drive: Socket.IO clients (Python, JS) and MCP servers
# (FastMCP from PyPI, server-everything from npm).
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
npm ci --prefix docs/examples/js --no-audit --no-fund --loglevel=error
npm ci --prefix tests/mcp --no-audit --no-fund --loglevel=error
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --doc --quiet
else
  cargo test "$@"
fi
