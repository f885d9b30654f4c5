#!/usr/bin/env bash
# Install everything earthloop needs on a fresh machine (idempotent; quick when already done).
# torch is installed FIRST and pinned: the local CPU wheel; an unpinned torch pulls CUDA (GBs).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$EARTHLOOP_ROOT"
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
fi
if ! "$VENV/bin/python" -c "import earthloop, ray, pytest" 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.earthloop-installed" ]; then
  "$VENV/bin/pip" install -q -e ".[dev]" "torch==$TORCH_VERSION"
  touch "$VENV/.earthloop-installed"
fi
# The STAC API server (rustac) lives in its own venv: it is a server, not a library of ours.
if [ ! -x "$STAC_VENV/bin/rustac" ]; then
  "$PY" -m venv "$STAC_VENV"
  "$STAC_VENV/bin/pip" install -q rustac==0.9.9 rustac-duckdb-extensions==1.5.1.post0
fi
# The local S3 stand-in (moto's server, for s3:// tables; infra/local/s3.sh) in its own venv.
if ! "$S3_VENV/bin/python" -c "import moto.server, flask" 2>/dev/null; then
  "$PY" -m venv "$S3_VENV"
  "$S3_VENV/bin/pip" install -q "moto[server]==5.2.5"
fi
# Label Studio (the annotation server) in its own venv: it pins its own Django stack and bundles
# label-studio-sdk 2.1.2, which the labeling tests use only to check our brush RLE bit for bit.
# The project itself talks REST with `requests` (docs/labelstudio.md). ~2 min and ~1 GB once.
LS_VENV="${LS_VENV:-$EARTHLOOP_ROOT/.venv-ls}"
if ! "$LS_VENV/bin/python" -c "import label_studio, label_studio_sdk" 2>/dev/null; then
  "$PY" -m venv "$LS_VENV"
  "$LS_VENV/bin/pip" install -q label-studio==1.23.2
fi
# Prometheus (Debian package) for the observability tests; it starts nothing by itself.
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  else
    echo "setup: prometheus not installed (needs root + apt-get); its tests will fail in CI" >&2
  fi
fi
# nginx (Debian package) serves COGs over HTTP with Range requests for the remote-read tests and
# benchmark (infra/local/cogs.sh); like Prometheus, it starts nothing by itself.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q --no-install-recommends nginx-light >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends nginx-light >/dev/null; }
  else
    echo "setup: nginx not installed (needs root + apt-get); the remote-COG tests will fail in CI" >&2
  fi
fi
# Debian's chromium + PyPI playwright for the Label Studio browser test (no browser download).
bash infra/local/browser.sh || echo "setup: browser test prerequisites missing (see above)" >&2
echo "setup: ok ($("$VENV/bin/python" -c 'import torch,ray;print("torch",torch.__version__,"ray",ray.__version__)'))"
