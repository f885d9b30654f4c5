"""Training checkpoints that load without running code and survive a broken newest copy.

Shared by pretraining (Ray Train) and the fine-tuning sweep (Ray Tune). Why each rule exists:

* ``torch.load(weights_only=True)`` only: a checkpoint directory is writable by anyone who can
  write the results storage, and an unrestricted unpickler would run their code in every worker.
  So checkpoints hold tensors and plain Python values only (ints, floats, strings, lists, dicts;
  NumPy RNG state as its plain-dict form, torch RNG state as a byte tensor).
* A small ``meta.json`` beside ``state.pt`` says which step a checkpoint holds, so a directory of
  checkpoints can be ordered newest first without loading 100 MB files, and so logs can say "the
  checkpoint at step 40".
* :func:`load_newest` tries checkpoints newest first and falls back to the next one when a file
  is truncated or corrupt (a node died mid-upload, a disk filled up), naming the broken file in
  the log; only when none loads does it raise, naming every file it tried.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

if TYPE_CHECKING:
    import pyarrow.fs

log = logging.getLogger("earthloop.checkpoints")

STATE_FILE = "state.pt"
META_FILE = "meta.json"
CHECKPOINT_PREFIX = "checkpoint_"

T = TypeVar("T")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def save_checkpoint(
    directory: str | os.PathLike[str], state: Mapping[str, Any], meta: Mapping[str, Any]
) -> None:
    """Write ``state.pt`` (tensors and plain values) and ``meta.json`` into ``directory``.

    The state is checked for plain values *before* it is written, so a value that
    ``weights_only=True`` loading would refuse (a NumPy array, a dataclass) fails here, at save
    time, with its key named, instead of on the resume that needs it.
    """
    check_plain(state)
    d = Path(directory)
    torch.save(dict(state), d / STATE_FILE)
    (d / META_FILE).write_text(json.dumps(dict(meta), sort_keys=True))


_PLAIN = (bool, int, float, str, bytes, type(None), torch.Tensor, torch.dtype, torch.device)


def check_plain(value: Any, where: str = "state") -> None:
    """Raise ``TypeError`` naming the first value ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not str/int")
            check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}: checkpoints hold tensors "
        "and plain ints/floats/strings/lists/dicts only (weights_only=True loading)"
    )


def load_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of one local state file; errors name the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file missing") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: {_why(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: expected a dict of training state, got {type(state).__name__}"
        )
    return state


def _why(exc: BaseException) -> str:
    """One line saying why a file did not load (torch's messages run over several lines)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    text = f"{type(exc).__name__}: {first}"
    if "zip archive" in first or "central directory" in first or "EOF" in first:
        return f"truncated or corrupt file ({text})"
    if "weights_only" in str(exc) or "Unsupported global" in str(exc):
        return f"holds pickled objects, refused by weights_only=True loading ({text})"
    return text


@dataclass(order=True)
class Candidate:
    """One checkpoint directory on a (possibly remote) filesystem, ordered oldest to newest."""

    step: int  # -1 when meta.json is missing or unreadable (e.g. an upload cut short)
    name: str
    path: str = field(compare=False)
    filesystem: Any = field(compare=False, default=None, repr=False)
    meta: dict[str, Any] = field(compare=False, default_factory=dict, repr=False)

    def describe(self) -> str:
        return f"{self.path} (step {self.step})" if self.step >= 0 else self.path


def filesystem_for(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """A pyarrow filesystem and the path on it for a local path or an ``s3://`` URI.

    Built by :func:`earthloop.store.fs.pyarrow_filesystem`, not ``FileSystem.from_uri``: the
    checkpoints must be listed at the endpoint (``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``) that
    Ray wrote them to, and ``from_uri`` would ask AWS itself.
    """
    from earthloop.store.fs import pyarrow_filesystem

    return pyarrow_filesystem(uri)


def _read_meta(fs: pyarrow.fs.FileSystem, path: str) -> dict[str, Any]:
    try:
        with fs.open_input_stream(posixpath.join(path, META_FILE)) as fh:
            meta = json.loads(fh.read().decode())
        return meta if isinstance(meta, dict) else {}
    except Exception:
        return {}


def candidate(fs: pyarrow.fs.FileSystem, path: str) -> Candidate:
    meta = _read_meta(fs, path)
    step = meta.get("step")
    return Candidate(
        int(step) if isinstance(step, int) else -1, posixpath.basename(path), path, fs, meta
    )


def list_candidates(fs: pyarrow.fs.FileSystem, parent: str) -> list[Candidate]:
    """Every ``checkpoint_*`` directory under ``parent``, newest (highest step) first."""
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []
    dirs = [
        i.path
        for i in infos
        if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith(CHECKPOINT_PREFIX)
    ]
    return sorted((candidate(fs, d) for d in dirs), reverse=True)


def load_candidate(c: Candidate) -> dict[str, Any]:
    """Load ``state.pt`` of ``c`` (read through its filesystem when it is not local)."""
    import pyarrow.fs

    file = posixpath.join(c.path, STATE_FILE)
    if c.filesystem is None or isinstance(c.filesystem, pyarrow.fs.LocalFileSystem):
        return load_state_file(file)
    try:
        with c.filesystem.open_input_stream(file) as fh:
            data = fh.read()
    except FileNotFoundError:
        raise CheckpointError(f"{file}: file missing") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{file}: {_why(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict of training state")
    return state


@dataclass
class Loaded:
    """The state that loaded, where it came from, and what was skipped on the way."""

    state: dict[str, Any]
    source: Candidate
    broken: list[str]  # one "file: reason" per newer checkpoint that did not load


def load_newest(
    candidates: Sequence[Candidate],
    *,
    what: str,
    logger: logging.Logger | None = log,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Loaded:
    """Load the newest candidate that loads (and passes ``check``), newest first.

    Each broken checkpoint is logged as a warning naming its file; the fallback is logged too.
    Raises :class:`CheckpointError` naming every file tried when none loads, because silently
    starting from step 0 would throw away the run's training without anyone noticing.
    """
    broken: list[str] = []
    for c in candidates:
        try:
            state = load_candidate(c)
            if check is not None:
                check(state)
        except CheckpointError as exc:
            broken.append(str(exc))
            if logger is not None:
                logger.warning("%s: checkpoint %s is unusable: %s", what, c.describe(), exc)
            continue
        if broken and logger is not None:
            logger.warning(
                "%s: falling back to checkpoint %s, the newest that loads (%d newer one(s) broken)",
                what,
                c.describe(),
                len(broken),
            )
        return Loaded(state, c, broken)
    tried = "; ".join(broken) if broken else "no checkpoint directories found"
    raise CheckpointError(
        f"{what}: no checkpoint loads ({tried}). Delete the broken checkpoint directories to "
        "start this run from scratch, or restore them from a backup"
    )


def merge_candidates(first: Sequence[Candidate], more: Sequence[Candidate]) -> list[Candidate]:
    """Union by path, newest first (the same directory seen twice is tried once)."""
    seen: dict[str, Candidate] = {}
    for c in [*first, *more]:
        seen.setdefault(c.path.rstrip("/"), c)
    return sorted(seen.values(), reverse=True)


def with_siblings(path: str, filesystem: pyarrow.fs.FileSystem | None) -> list[Candidate]:
    """The checkpoint at ``path`` and every other ``checkpoint_*`` beside it, newest first.

    Ray hands a resumed worker its latest *registered* checkpoint; the run directory may also
    hold older ones (the fallback when that one is broken) and, after a kill between upload and
    registration, a newer complete one. Ordering is by the step in ``meta.json``.
    """
    if filesystem is None:
        filesystem, path = filesystem_for(path)
    parent = posixpath.dirname(path.rstrip("/"))
    return merge_candidates([candidate(filesystem, path)], list_candidates(filesystem, parent))


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars/arrays turned into Python numbers/lists (for weights_only)."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = [
    "CHECKPOINT_PREFIX",
    "META_FILE",
    "STATE_FILE",
    "Candidate",
    "CheckpointError",
    "Loaded",
    "candidate",
    "check_plain",
    "filesystem_for",
    "list_candidates",
    "load_candidate",
    "load_newest",
    "load_state_file",
    "merge_candidates",
    "plain",
    "save_checkpoint",
    "with_siblings",
]
