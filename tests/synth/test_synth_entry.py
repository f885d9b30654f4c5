"""The ``earthloop sample-data`` command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from earthloop.cli import main as cli_main
from earthloop.synth import load_manifest
from earthloop.synth.entry import main

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
    text = capsys.readouterr().out
    assert "[1/2]" in text and "ETA" in text and "scenes/s" in text
    assert str(out / "collection.json") in text and "items.ndjson" in text
    m = load_manifest(out)
    assert m.params["size_px"] == 64 and len(m.scenes) == 2

    assert main(["--out", str(out), *SMALL]) == 0
    assert "up to date" in capsys.readouterr().out

    assert main(["--out", str(out), *SMALL, "--seed", "1"]) == 0
    assert "[2/2]" in capsys.readouterr().out
    assert load_manifest(out).seed == 1

    assert main(["--out", str(out), *SMALL, "--seed", "1", "--force"]) == 0
    assert "[2/2]" in capsys.readouterr().out


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
