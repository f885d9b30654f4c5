#!/usr/bin/env bash
# Create the benchmark-only venv .venv-bench (idempotent).
#
# Why a separate venv: TorchGeo 0.8.1 needs torch 2.14.1 + torchvision 0.29.1, while the main
# .venv pins the torch 2.13.0 CPU wheel (torchvision does not import beside it). Keeping TorchGeo
# out of .venv means the platform never changes torch to run a comparison. The pinned pair is
# installed first and by itself so pip takes it from local disk (see ../shared/STACK.md beside
# the checkout), then TorchGeo and what `earthloop.stream` imports (earthloop itself without its
# dependency list, so pip cannot swap torch).
#
# Usage: bash benchmarks/setup_bench_venv.sh   (re-running only checks; ≈2 min and ≈6 GB first time)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi
PIP=("$VENV/bin/pip" install --quiet)

have() { "$VENV/bin/python" -c "$1" >/dev/null 2>&1; }

if ! have 'import torch, torchvision; assert torch.__version__.startswith("2.14.1")'; then
  "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1"
fi
if ! have 'import torchgeo'; then
  "${PIP[@]}" torchgeo "torch==2.14.1" "torchvision==0.29.1"
fi
if ! have 'import rasterio, pyarrow, deltalake, ray.data, pystac, pydantic, yaml, shapely'; then
  "${PIP[@]}" rasterio pyarrow deltalake "ray[data]==2.60.0" pystac pydantic pyyaml shapely \
    "torch==2.14.1" "torchvision==0.29.1"
fi
if ! have 'import earthloop.stream'; then
  "${PIP[@]}" --no-deps -e "$ROOT"
fi

"$VENV/bin/python" - <<'EOF'
import torch, torchvision, torchgeo, rasterio
print(f"{__import__('sys').prefix}: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"torchgeo {torchgeo.__version__}, rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__})")
EOF
