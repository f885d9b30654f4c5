"""The ``earthloop sample-data`` command line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from earthloop.cli import main as cli_main
from earthloop.synth import load_manifest
from earthloop.synth.entry import _SceneProgress, main


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """main() installs a stderr handler on the root logger; take it away after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


SMALL = [
    "--preset",
    "tiny",
    "--set",
    "size_px=64",
    "--set",
    "tiles=[33TWL]",
    "--set",
    "dates=['03-01','08-01']",
]


def test_generates_then_skips_then_forces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    assert main(["--out", str(out), *SMALL]) == 0
    captured = capsys.readouterr()
    text = captured.out
    # progress is logged on stderr in the shared Progress format; the final line is always there
    assert "sample-data: 2/2 100.0% done" in captured.err and "scenes/s avg" in captured.err
    assert "scene=" not in text
    assert str(out / "collection.json") in text and "items.ndjson" in text
    m = load_manifest(out)
    assert m.params["size_px"] == 64 and len(m.scenes) == 2

    assert main(["--out", str(out), *SMALL]) == 0
    assert "up to date" in capsys.readouterr().out

    assert main(["--out", str(out), *SMALL, "--seed", "1"]) == 0
    assert "sample-data: 2/2" in capsys.readouterr().err
    assert load_manifest(out).seed == 1

    assert main(["--out", str(out), *SMALL, "--seed", "1", "--force"]) == 0
    assert "sample-data: 2/2" in capsys.readouterr().err


def test_dispatcher_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli_main(["sample-data", "--out", str(tmp_path), "--preset", "tiny", "--set", "size_px=31"])
        == 2
    )
    assert "size_px" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--set", "nonsense"]) == 2
    assert "key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--preset", "nope"])


def test_scene_progress_logs_each_window_with_the_scene(caplog: pytest.LogCaptureFixture) -> None:
    """Every reported scene counts once; with a zero-length window each one is logged."""
    with (
        caplog.at_level(logging.INFO, logger="earthloop.synth"),
        _SceneProgress(every_s=1e-9) as progress,
    ):
        progress(1, 3, "scene-a")
        progress(2, 3, "scene-b")
    lines = [r.getMessage() for r in caplog.records]
    assert progress.progress is not None and progress.progress.done == 2
    assert lines[0].startswith("sample-data: 1/3 33.3%") and "scene=scene-a" in lines[0]
    assert lines[1].startswith("sample-data: 2/3 66.7%") and "scene=scene-b" in lines[1]
    assert lines[-1].startswith("sample-data: 2/3 66.7% done")


def test_scene_progress_marks_a_failed_run(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="earthloop.synth"),
        pytest.raises(OSError),
        _SceneProgress(every_s=60.0) as progress,
    ):
        progress(1, 2, "scene-a")
        raise OSError("disk full")
    assert "failed (OSError)" in caplog.records[-1].getMessage()
    assert caplog.records[-1].levelno == logging.WARNING
