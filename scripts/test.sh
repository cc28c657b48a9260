#!/usr/bin/env bash
# The whole test suite: make the wasm target and the test clients available,
# then run every test (unit, property and integration; host/build.rs builds
# the bundled plugins).
set -euo pipefail
cd "$(dirname "$0")/.."
# Python run by the tests writes no __pycache__ into plugin-sdk/, which
# host/build.rs watches (it would build the bundled plugins again).
export PYTHONDONTWRITEBYTECODE=1
scripts/setup-wasm-target.sh
# Debian packages the tests run: a real redis-server for the store tests
# (they start their own instances), faketime for a cluster host whose clock
# is off, curl for the documented HTTP session,
# Prometheus (with promtool) to scrape and lint /metrics, and Chromium with
# its WebDriver for the dashboard.
need_package() { # COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null; }
  else
    echo "error: the tests need $1 (e.g. sudo apt-get install $2)" >&2
    exit 1
  fi
}
need_package redis-server redis-server
need_package faketime faketime
need_package curl curl
need_package promtool prometheus
need_package chromium chromium
need_package chromedriver chromium-driver
# Real peers the tests drive: Socket.IO clients (Python, JS) and MCP servers
# (FastMCP from PyPI, server-everything from npm); the plugin SDKs' build
# tools (componentize-py from PyPI, componentize-js from npm).
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
npm ci --prefix docs/examples/js --no-audit --no-fund --loglevel=error
# The JS plugin SDK's build tools (componentize-js, rolldown); the tests
# build JS plugins from source with them.
npm ci --prefix plugin-sdk/js --no-audit --no-fund --loglevel=error
npm ci --prefix tests/mcp --no-audit --no-fund --loglevel=error
npm ci --prefix dashboard --no-audit --no-fund --loglevel=error
# The layers (docs/architecture.md): no import circle between modules, at
# the crate's top or inside any module, and no arrow up its layers.
python3 scripts/layers.py --all --quiet >/dev/null || {
  python3 scripts/layers.py --all --quiet >&2
  echo "error: an import circle or an upward arrow (scripts/layers.py --all)" >&2
  exit 1
}
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --doc --quiet
else
  cargo test "$@"
fi
