"""Bad pretraining requests fail on the driver, before any worker is scheduled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from earthloop.config import ConfigError, load_config
from earthloop.pretrain.runner import plan_pretrain

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, *over: str):  # type: ignore[no-untyped-def]
    return load_config(None, [f"workdir={tmp_path}", *over])


def test_unknown_band_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="B13"):
        plan_pretrain(_cfg(tmp_path, "pretrain.bands=[B02, B13]"))


def test_batch_smaller_than_workers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size=1 is smaller than ray.num_workers=2"):
        plan_pretrain(_cfg(tmp_path, "pretrain.batch_size=1"))


def test_missing_chip_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no chip table"):
        plan_pretrain(_cfg(tmp_path))


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pretrain.lerning_rate"):
        plan_pretrain(_cfg(tmp_path, "pretrain.lerning_rate=0.1"))


def test_cscl_needs_labels_and_seco_three_dates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="supervised"):
        plan_pretrain(_cfg(tmp_path, "pretrain.method=cscl", "pretrain.probe.labels=null"))
    with pytest.raises(ConfigError, match="dates must be >= 3"):
        plan_pretrain(_cfg(tmp_path, "pretrain.dates=2"))


def test_cscl_needs_an_explicit_labelled_subset(tmp_path: Path) -> None:
    """CSCL never defaults to every chip's labels: the subset is named, and it must exist."""
    labels = "pretrain.probe.labels=data/synthetic/manifest.json"
    with pytest.raises(ConfigError, match="cscl_labelled_chips"):
        plan_pretrain(_cfg(tmp_path, "pretrain.method=cscl", labels))
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match="no file"):
        plan_pretrain(
            _cfg(
                tmp_path, "pretrain.method=cscl", labels, f"pretrain.cscl_labelled_chips={missing}"
            )
        )


def test_bad_lr_milestones_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lr_milestones"):
        plan_pretrain(_cfg(tmp_path, "pretrain.lr_milestones=[0.8, 0.6]"))


def test_cli_exits_2_before_touching_ray(tmp_path: Path) -> None:
    """The job entry point reports the error and never connects to a cluster."""
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "jobs" / "pretrain.py"),
            f"workdir={tmp_path}",
            "ray.address=127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "no chip table" in res.stderr  # errors go to stderr, not stdout
    assert "no chip table" not in res.stdout
