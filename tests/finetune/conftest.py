"""Fine-tuning fixtures: a tiny synthetic archive with a chip index, built once per session.

One 256-px tile (2.56 km) of the ``tiny`` preset, three dates, and a 7x7 grid of 32-px chips
(320 m, non-overlapping) ingested from its static STAC catalog: ~13 s on 2 shared cores, and
small enough that a whole sweep trains in seconds. The tile is narrower than the index's 5 km
split blocks, so every test config uses ``split.mode=blocks`` with 0.004° (~300-450 m) blocks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

BANDS = ["B02", "B03", "B04", "B08"]


@dataclass(frozen=True)
class TinyData:
    root: Path  # the synthetic archive (manifest.json)
    workdir: Path  # holds tables/chips

    def overrides(self, workdir: Path | None = None, **finetune: Any) -> list[str]:
        """Config overrides for a sweep on this data; ``workdir`` gets the chip table link."""
        wd = workdir or self.workdir
        if wd != self.workdir:
            (wd / "tables").mkdir(parents=True, exist_ok=True)
            link = wd / "tables" / "chips"
            if not link.exists():
                link.symlink_to(self.workdir / "tables" / "chips")
        base: dict[str, Any] = {
            "split.mode": "blocks",
            "split.block_deg": 0.004,
            "max_cloud": 0.5,
            "backbone": "resnet_tiny",
            "max_eval_chips": 12,
            "batch_size": 8,
            "log_every_s": 5,
        }
        base.update(finetune)
        out = [f"workdir={wd}", f"data_dir={self.root}", "ingest.bands=" + json.dumps(BANDS)]
        out += [
            f"finetune.{k}={json.dumps(v) if not isinstance(v, str) else v}"
            for k, v in base.items()
        ]
        return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.synth import generate

    base = tmp_path_factory.mktemp("finetune-tiny")
    root = base / "synthetic"
    generate(root, preset="tiny", seed=0, size_px=256, tiles=["33TWL"])
    bbox = json.loads((root / "manifest.json").read_text())["labels"]["33TWL"]["bbox"]
    work = base / "work"
    cfg = load_config(
        None,
        [
            f"workdir={work}",
            f"stac.url={root / 'catalog' / 'catalog.json'}",
            "ingest.chip_size=32",
            "ingest.num_locations=49",
            "ingest.sampling=grid",
            "ingest.max_chip_cloud=0.5",
            "ingest.dates_per_location=3",
            "ingest.workers=2",
            "ingest.bbox=" + json.dumps(bbox),
        ],
    )
    report = run_ingest(cfg)
    assert report.chips >= 40, report.summary()
    return TinyData(root, work)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny tensors on a shared 2-core machine: extra OpenMP threads only spin."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
