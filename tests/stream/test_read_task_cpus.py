"""Read tasks ask for a whole CPU over local files and a fraction over remote ones.

Over HTTP a read task mostly waits on round trips (issue 11 §5): several tasks per CPU keep more
range requests in flight, while local reads are decode-bound and get one task per CPU. The choice
is made from the index's first href, read from one row group whatever the index size.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import write_deltalake
from earthloop.stream.dataset import REMOTE_TASK_CPUS, REMOTE_TASK_CPUS_ENV, _read_task_cpus
from earthloop.stream.index import first_href, snapshot
from index_data import synthetic_table

pytestmark = pytest.mark.shared_data

RKH = "sentinel2-l2a/cogs-29RKH/S2A_29RKH_20200219_0_L2A"


def _index(tmp_path: Path, shared_data: Path, name: str, url: str | None) -> str:
    table = synthetic_table(shared_data / RKH, 20)
    if url is not None:  # the same rows, as if ingest had indexed the COGs behind a URL
        hrefs = [[url + Path(h).name for h in row] for row in table["hrefs"].to_pylist()]
        i = table.schema.get_field_index("hrefs")
        table = table.set_column(i, "hrefs", pa.array(hrefs, table.schema.field(i).type))
    uri = str(tmp_path / name)
    write_deltalake(uri, table)
    return uri


def test_local_cogs_get_one_cpu_per_read_task(tmp_path: Path, shared_data: Path) -> None:
    ref = snapshot(_index(tmp_path, shared_data, "local", None))
    href = first_href(ref)
    assert href is not None and Path(href).is_file()
    assert _read_task_cpus(ref) == 1.0


def test_remote_cogs_get_a_fraction(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = snapshot(_index(tmp_path, shared_data, "remote", "https://cogs.example/29RKH/"))
    assert str(first_href(ref)).startswith("https://cogs.example/29RKH/")
    monkeypatch.delenv(REMOTE_TASK_CPUS_ENV, raising=False)
    assert _read_task_cpus(ref) == REMOTE_TASK_CPUS < 1
    monkeypatch.setenv(REMOTE_TASK_CPUS_ENV, "0.5")
    assert _read_task_cpus(ref) == 0.5
    for bad in ("0", "2", "many"):
        monkeypatch.setenv(REMOTE_TASK_CPUS_ENV, bad)
        with pytest.raises(ValueError, match=REMOTE_TASK_CPUS_ENV):
            _read_task_cpus(ref)


def test_an_empty_index_has_no_href(tmp_path: Path, shared_data: Path) -> None:
    table = synthetic_table(shared_data / RKH, 5)
    uri = str(tmp_path / "empty")
    write_deltalake(uri, table.filter(pc.equal(table["chip_id"], "none")))
    assert first_href(snapshot(uri)) is None
