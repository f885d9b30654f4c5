"""Label-value sanitising and the recorders' shared constructor (earthloop.observe.labels)."""

from __future__ import annotations

import pytest
from earthloop.observe import labels, recorders
from earthloop.observe.backends import NoopBackend


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cloud", "cloud"),
        ("val_miou", "val_miou"),
        ("S2A_33TWL_20230301", "other"),  # upper case: looks like an id
        ("/data/chips/0001.tif", "other"),
        ("x" * 33, "other"),  # longer than 32 characters
        ("1abc", "other"),  # must start with a letter
    ],
)
def test_bounded_keeps_only_short_identifiers(value: str, expected: str) -> None:
    assert labels.bounded(value) == expected


def test_loss_term_names_the_total_and_strips_the_prefix() -> None:
    assert labels.loss_term("loss") == "total"
    assert labels.loss_term("total") == "total"
    assert labels.loss_term("loss_seco") == "seco"
    assert labels.loss_term("loss_Chip/42") == "other"


def test_unknown_reasons_and_statuses_fold_into_one_value() -> None:
    assert labels.ingest_reject_reason("nodata") == "nodata"
    assert labels.ingest_reject_reason("disk on fire") == "other"
    assert labels.tune_trial_status("terminated") == "terminated"
    assert labels.tune_trial_status("paused") == "error"


def test_job_name_must_be_a_job_kind() -> None:
    assert labels.check_job_name("label-webhook") == "label-webhook"
    with pytest.raises(ValueError, match="not a run id"):
        labels.check_job_name("Pretrain_2024-01-01T00:00")


@pytest.mark.parametrize(
    ("cls", "default"),
    [
        (recorders.IngestMetrics, "ingest"),
        (recorders.StreamMetrics, "pretrain"),
        (recorders.TrainMetrics, "pretrain"),
        (recorders.TuneMetrics, "tune"),
        (recorders.LabelMetrics, "label"),
    ],
)
def test_recorders_share_one_constructor(cls: type[recorders.JobMetrics], default: str) -> None:
    assert cls(backend=NoopBackend()).job_name == default
    assert cls("custom", backend=NoopBackend()).job_name == "custom"
    with pytest.raises(ValueError):
        cls("Run 17")


def test_the_base_recorder_needs_a_job_name() -> None:
    with pytest.raises(TypeError, match="needs a job_name"):
        recorders.JobMetrics()
