"""Sanitising of metric label values: every value a recorder sends passes through here.

Why a module of its own: each distinct label value becomes its own Prometheus time series, so a
caller passing a chip id, a path or an exception message as a label would create one series per
value and bury the metric. The rules that keep label values few and well-formed are kept in one
place, apart from the catalogue (what exists) and the backends (where values go), so every
recorder applies the same rules.
"""

from __future__ import annotations

import re
from typing import Final

from earthloop.observe.catalogue import INGEST_REJECT_REASONS, TUNE_TRIAL_STATUSES

__all__ = [
    "bounded",
    "check_job_name",
    "ingest_reject_reason",
    "loss_term",
    "tune_trial_status",
]

_JOB_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_.-]{0,47}$")
_LABEL_VALUE_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def check_job_name(job_name: str) -> str:
    """Return ``job_name`` if it looks like a job kind; raise ``ValueError`` otherwise.

    Why raise here, unlike the other label rules: the job name is chosen in code, once per
    recorder, so a run id passed by mistake is a bug to surface at construction, not later.
    """
    if not _JOB_NAME_RE.match(job_name):
        raise ValueError(
            f"job_name {job_name!r}: use a short lower-case job kind such as 'pretrain', "
            "not a run id (it becomes a Prometheus label)"
        )
    return job_name


def bounded(value: str, fallback: str = "other") -> str:
    """Keep a label value short and identifier-like; anything else becomes ``fallback``.

    Why: a caller passing a chip id, a path or an exception message as a reason would create a
    new time series per value. Lower-case identifiers of at most 32 characters pass.
    """
    return value if _LABEL_VALUE_RE.match(value) else fallback


def loss_term(key: str) -> str:
    """Label value for a loss key: ``loss``/``total`` -> ``total``, ``loss_seco`` -> ``seco``."""
    if key in ("loss", "total"):
        return "total"
    return bounded(key.removeprefix("loss_"))


def ingest_reject_reason(reason: str) -> str:
    """A reason outside :data:`INGEST_REJECT_REASONS` counts as ``other``.

    Why not raise: a new failure mode in a long ingest must not crash it through its metrics.
    """
    return reason if reason in INGEST_REJECT_REASONS else "other"


def tune_trial_status(status: str) -> str:
    """A status outside :data:`TUNE_TRIAL_STATUSES` counts as ``error`` (it did not terminate)."""
    return status if status in TUNE_TRIAL_STATUSES else "error"
