#!/usr/bin/env bash
# Install the browser test's prerequisites if missing (idempotent; instant when done):
# Debian's chromium (/usr/bin/chromium) and PyPI's playwright in the project venv.
# Why not `playwright install`: it downloads a browser build from a CDN this machine cannot reach;
# tests/labeling/test_browser.py drives the system chromium through executable_path instead.
set -euo pipefail
source "$(dirname "$0")/env.sh"
PLAYWRIGHT_VERSION="${PLAYWRIGHT_VERSION:-1.65.2}"
CHROMIUM="${EARTHLOOP_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
  else
    echo "browser: $CHROMIUM missing and cannot install it (needs root + apt-get)" >&2
    exit 1
  fi
fi
if ! "$VENV/bin/python" -c "import playwright.sync_api" 2>/dev/null; then
  "$VENV/bin/pip" install -q "playwright==$PLAYWRIGHT_VERSION"
fi
echo "browser: ok ($("$CHROMIUM" --version 2>/dev/null | head -1); playwright $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("playwright"))'))"
