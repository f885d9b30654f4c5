"""The pyarrow filesystem for ``s3://`` (Ray Train/Tune storage) reaches the same store as Delta."""

from __future__ import annotations

import pytest
from earthloop.store.delta import merge_rows
from earthloop.store.fs import pyarrow_filesystem


def test_s3_filesystem_sees_the_delta_table_and_round_trips_files(s3_root: str) -> None:
    import pyarrow as pa
    import pyarrow.fs as pafs

    merge_rows(f"{s3_root}/t", pa.table({"k": ["a"]}), ["k"])
    fs, path = pyarrow_filesystem(f"{s3_root}/t")
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(path))}
    assert "_delta_log" in names
    with fs.open_output_stream(f"{path}/ckpt/meta.json") as out:
        out.write(b"{}")
    with fs.open_input_stream(f"{path}/ckpt/meta.json") as inp:
        assert inp.read() == b"{}"


def test_plain_http_endpoint_needs_explicit_consent(
    s3_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    with pytest.raises(ValueError, match="AWS_ALLOW_HTTP"):
        pyarrow_filesystem(f"{s3_root}/x")
