"""Our brush RLE against the vendor's, bit for bit, in the Label Studio venv.

Why a subprocess: the SDK lives only in ``.venv-ls`` (bundled with the server) on purpose, not in
the project's venv. Both directions are checked (our encoding decoded by the SDK, the SDK's
decoded by us) and the encodings are compared bit for bit (up to trailing zero padding).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from earthloop.labelstudio.rle import mask_to_rle, rle_to_mask

pytestmark = pytest.mark.integration  # needs the Label Studio venv (setup.sh)

SDK_SCRIPT = """
import json, sys
import numpy as np
from label_studio_sdk.converter import brush
cases = json.load(sys.stdin)
out = []
for case in cases:
    mask = np.array(case["mask"], dtype=np.uint8) * 255
    h, w = mask.shape
    theirs_of_ours = brush.decode_rle(case["ours"]).reshape(h, w, 4)[:, :, 3]
    out.append({"sdk": [int(b) for b in brush.mask2rle(mask)],
                "decoded_ours": (theirs_of_ours > 127).astype(int).tolist()})
json.dump(out, sys.stdout)
"""


def test_rle_matches_label_studio_sdk(ls_venv: Path) -> None:
    rng = np.random.default_rng(3)
    masks = [
        np.zeros((16, 16), bool),
        rng.random((64, 64)) > 0.5,
        rng.random((140, 130)) > 0.998,
        np.pad(np.ones((20, 30), bool), ((5, 39), (7, 27))),
    ]
    cases = [{"mask": m.astype(int).tolist(), "ours": mask_to_rle(m)} for m in masks]
    run = subprocess.run(
        [str(ls_venv / "bin" / "python"), "-c", SDK_SCRIPT],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for mask, case, got in zip(masks, cases, json.loads(run.stdout), strict=True):
        assert np.array_equal(np.array(got["decoded_ours"], bool), mask)  # SDK reads ours
        assert np.array_equal(rle_to_mask(got["sdk"], *mask.shape), mask)  # we read the SDK's
        # Same bit stream; the SDK adds a whole zero byte when the stream is already aligned.
        ours = case["ours"]
        assert got["sdk"][: len(ours)] == ours and set(got["sdk"][len(ours) :]) <= {0}
