"""``label_efficiency.py --bundle`` on a machine without the storage stack (a lent GPU box).

    python benchmarks/label_efficiency_device.py --bundle bundle.xz --out OUT --device cuda ...

The bundle (written by ``label_efficiency.py --bundle-out``) carries the planned split and every
pixel the protocol reads; :mod:`device_shim` answers the imports of rasterio, deltalake and Ray
that earthloop's modules make at import time. The shim is installed at module level so the
spawned worker processes (which re-import this file) get it too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

import device_shim  # noqa: E402

SHIMMED = device_shim.install()

from label_efficiency import main  # noqa: E402

if __name__ == "__main__":
    print(f"device_shim placeholders: {SHIMMED or 'none'}", flush=True)
    sys.exit(main())
