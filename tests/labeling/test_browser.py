"""A pushed task, opened in headless Chromium, shows the chip and the model's pre-annotation.

The API tests prove Label Studio *stores* what push sends; only a browser proves the annotator
*sees* it: the preview served through local-files storage to a logged-in session, and the
brush RLE decoded and painted in the class colour of the label config. The test pushes one
chip whose pre-annotation paints the left half "water" and leaves the right half unlabelled,
logs in through the login form, opens the task in the labeling view and reads the screenshot:

- right half: the pixels are the preview's (correlation with the preview PNG, small error);
- left half: the pixels are the preview blended with the water colour — a least-squares blend
  weight well inside (0, 1), with a residual far smaller than for any other class colour.

Chromium is Debian's (``/usr/bin/chromium``), driven by PyPI ``playwright`` through
``executable_path``: no browser download. The screenshot stays in the test's tmp dir (pytest
keeps the last runs) as the CI artefact. Missing prerequisites skip locally and fail in CI.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest
from earthloop.labelstudio.configs import SEGMENTATION
from earthloop.labelstudio.palette import class_colours
from earthloop.labelstudio.project import ProjectSpec
from earthloop.labelstudio.push import Prediction, Selected, push_chips
from earthloop.store.delta import read_table
from earthloop.store.labels import label_source_from_manifest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("EARTHLOOP_CHROMIUM", "/usr/bin/chromium"))
INSTALL = (
    "run infra/local/browser.sh (apt-get install --no-install-recommends chromium; "
    ".venv/bin/pip install playwright==1.65.2; no `playwright install`)"
)
# Chromium on a machine without network: no background connections, no sandbox as root.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
USER = "admin@earthloop.local"
PRED_CLASS = "water"


def _missing(config: pytest.Config) -> Callable[[str], None]:
    """conftest.py's skip-locally-fail-in-CI helper, found through pytest's plugin manager."""
    here = str(ROOT / "tests" / "labeling" / "conftest.py")
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == here:
            found: Callable[[str], None] = plugin.root_missing(config)
            return found
    raise RuntimeError("tests/labeling/conftest.py is not loaded")


@pytest.fixture(scope="session")
def chromium(request: pytest.FixtureRequest) -> Path:
    """Session-scoped so that it is checked before the Label Studio server is started."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing(request.config)(f"playwright is not installed in the venv; {INSTALL}")
    if not CHROMIUM.is_file():
        _missing(request.config)(f"{CHROMIUM} is absent; {INSTALL}")
    return CHROMIUM


@pytest.fixture
def page(chromium: Path, tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium (its own empty profile in tmp_path) and one page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(chromium),
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield ctx.new_page()
        finally:
            ctx.close()


@pytest.fixture
def pushed(label_studio: Any, synthetic_demo: dict[str, Any]) -> dict[str, Any]:
    """One clear demo chip pushed with a pre-annotation painting its left half ``water``."""
    rows = read_table(str(synthetic_demo["chips"])).to_pylist()
    row = min(rows, key=lambda r: (r["cloud_fraction"], r["chip_id"]))
    source = label_source_from_manifest(synthetic_demo["manifest"].root, "landcover")
    spec = ProjectSpec("browser check", SEGMENTATION, source.classes, label_studio.files_root)
    size = int(row["chip_size"])
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:, : size // 2] = next(c for c, n in spec.classes.items() if n == PRED_CLASS)
    chip = row["chip_id"]
    report = push_chips(
        label_studio.client(),
        spec,
        [Selected(chip, "margin", 0.7, al_round=1)],
        {chip: row},
        {chip: Prediction("model-b", 0.3, mask)},
    )
    assert report.created == 1
    return {
        "project": report.project_id,
        "task": report.task_ids[chip],
        "preview": spec.preview_dir(report.project_id) / f"{chip}.png",
        "size": size,
        "colours": {n: _rgb(h) for n, h in class_colours(spec.names).items()},
    }


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)


def _login(page: Any, url: str, password: str) -> None:
    page.goto(f"{url}/user/login/")
    page.fill("input[name=email]", USER)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/user/login" not in u, timeout=30_000)


# The labeling view paints the image and the regions on Konva canvases laid over each other;
# the largest one drawn at its own resolution is the image stage.
STAGE_JS = """() => {
  const boxes = [...document.querySelectorAll('canvas')].map(c => {
    const r = c.getBoundingClientRect();
    return {x: r.left, y: r.top, w: r.width, h: r.height, cw: c.width};
  }).filter(b => b.w > 100 && Math.abs(b.cw - b.w) < 2);
  boxes.sort((a, b) => b.w * b.h - a.w * a.h);
  return boxes[0] || null;
}"""


def _sample(shot: np.ndarray, box: dict[str, float], n: int) -> np.ndarray:
    """(n, n, 3) screenshot pixels at the centres of the stage's n × n chip-pixel cells."""
    ys = (box["y"] + (np.arange(n) + 0.5) * box["h"] / n).astype(int)
    xs = (box["x"] + (np.arange(n) + 0.5) * box["w"] / n).astype(int)
    return shot[ys][:, xs]


def _blend(seen: np.ndarray, preview: np.ndarray, colour: np.ndarray) -> tuple[float, float]:
    """``a`` in seen ≈ (1 − a)·preview + a·colour, and the mean |residual| per pixel.

    ``a`` is fitted on the half's mean colour, not pixel by pixel: the display resamples the
    chip, which moves single pixels by ~10 levels towards their neighbours (on a bluish chip
    that looked like a 0.2 water tint while the right half was plainly untinted); resampling
    keeps the mean, a tint moves it.
    """
    seen, preview = seen.reshape(-1, 3), preview.reshape(-1, 3)
    want_px, got_px = colour[None, :] - preview, seen - preview
    want, got = want_px.mean(axis=0), got_px.mean(axis=0)
    assert float(np.linalg.norm(want)) > 30.0, f"chip colour too close to the brush: {want}"
    a = float(want @ got / float(want @ want))
    return a, float(np.abs(got_px - a * want_px).mean())


def test_a_pushed_task_shows_its_image_and_preannotation(
    page: Any, label_studio: Any, pushed: dict[str, Any], tmp_path: Path
) -> None:
    password = (label_studio.stack_dir / "labelstudio_password").read_text().strip()
    _login(page, label_studio.url, password)
    size = pushed["size"]
    page.goto(f"{label_studio.url}/projects/{pushed['project']}/data?task={pushed['task']}")
    page.wait_for_function(
        "n => [...document.images].some(i => i.complete && i.naturalWidth >= n"
        " && i.src.startsWith('blob:'))",
        arg=size,
        timeout=60_000,
    )
    page.get_by_text(PRED_CLASS, exact=True).last.wait_for(timeout=30_000)  # the region list
    box = page.evaluate(STAGE_JS)
    assert box is not None, "no image stage canvas in the labeling view"

    preview = mpimg.imread(pushed["preview"])[..., :3].astype(np.float64) * 255.0
    valid = preview.sum(axis=-1) > 0  # nodata is black in the preview
    inner = np.zeros((size, size), dtype=bool)
    inner[3:-3, 3:-3] = True  # the display smooths across edges: stay off them
    left, right = inner & valid, inner & valid
    left[:, size // 2 - 3 :] = False
    right[:, : size // 2 + 3] = False
    assert left.sum() > size * size // 8 and right.sum() > size * size // 8
    shot_path = tmp_path / "labeling-view.png"
    water = pushed["colours"][PRED_CLASS]
    deadline = time.monotonic() + 20  # the canvas is painted a moment after the region exists
    while True:
        page.screenshot(path=str(shot_path))
        shot = mpimg.imread(shot_path)[..., :3].astype(np.float64) * 255.0
        seen = _sample(shot, box, size)
        a_left, res_left = _blend(seen[left], preview[left], water)
        if a_left > 0.2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    # The image: the unlabelled right half shows the preview's own pixels.
    err = np.abs(seen[right] - preview[right]).mean()
    corr = np.corrcoef(seen[right].ravel(), preview[right].ravel())[0, 1]
    assert err < 25 and corr > 0.9, f"image not shown ({shot_path}): error {err:.1f}, r {corr:.3f}"
    a_right, _ = _blend(seen[right], preview[right], water)
    assert abs(a_right) < 0.1, f"the unlabelled half is tinted ({a_right:.2f}; {shot_path})"
    # The pre-annotation: the left half is the preview under a water-coloured brush.
    assert 0.2 < a_left < 0.95 and res_left < 15, (
        f"pre-annotation not shown ({shot_path}): blend {a_left:.2f}, residual {res_left:.1f}"
    )
    others = {
        n: _blend(seen[left], preview[left], c)[1]
        for n, c in pushed["colours"].items()
        if n != PRED_CLASS
    }
    assert all(res_left < 0.5 * r for r in others.values()), (res_left, others)
