"""The candidate pool: every chip a strategy may look at, as aligned numpy arrays.

Why one aligned structure: strategies differ in which columns they read (embeddings, per-chip
uncertainty summaries, location, coordinates, labels), but they must agree on which row is
which chip and on which rows are off limits. The pool is built once per round from the table
contracts in ``earthloop.store.tables`` (``embeddings``, ``predictions``, ``labels``,
``al_rounds``, plus ``chips`` for coordinates), sorted by chip id so that a result never
depends on the order in which Delta happened to return rows.

Labelled and queued chips stay *in* the pool, flagged ``excluded``: they are never selected,
but they are what kNN compares against and what coreset/hybrid measure coverage from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Pool", "pool_from_tables", "unit_rows"]


def unit_rows(x: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """Float32 rows scaled to unit length (zero rows stay zero), chunked to bound temporaries.

    Every distance in selection is cosine: embeddings of different model versions have
    different scales, and near-duplicate thresholds must mean the same thing for all of them.
    """
    out = np.empty(x.shape, dtype=np.float32)
    for s in range(0, x.shape[0], chunk):
        block = np.asarray(x[s : s + chunk], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        np.divide(block, np.maximum(norms, 1e-12), out=out[s : s + chunk])
    return out


@dataclass
class Pool:
    """Aligned per-chip arrays; optional columns are ``None`` when the round does not have them.

    ``excluded`` marks chips that are labelled or already queued; ``labelled`` the subset with
    labels; ``label_vectors`` holds, for labelled rows, a probability vector over classes (one-hot
    for a scene class, normalised multi-hot for multilabel, class fractions for a mask).
    """

    chip_ids: np.ndarray
    embeddings: np.ndarray | None = None  # (N, D) float32, unit rows
    location_codes: np.ndarray | None = None  # (N,) int64, one code per location_id
    season: np.ndarray | None = None
    lon: np.ndarray | None = None
    lat: np.ndarray | None = None
    mean_entropy: np.ndarray | None = None
    mean_margin: np.ndarray | None = None
    class_histogram: np.ndarray | None = None  # (N, C) predicted-class fractions
    pixel_probs: np.ndarray | None = None  # (N, C, H, W) per-pixel class probabilities
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    labelled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    label_vectors: np.ndarray | None = None  # (N, K) float32; rows of unlabelled chips are 0

    def __post_init__(self) -> None:
        n = len(self.chip_ids)
        if self.excluded.size == 0:
            self.excluded = np.zeros(n, dtype=bool)
        if self.labelled.size == 0:
            self.labelled = np.zeros(n, dtype=bool)
        for name in (
            "embeddings",
            "location_codes",
            "season",
            "lon",
            "lat",
            "mean_entropy",
            "mean_margin",
            "class_histogram",
            "pixel_probs",
            "excluded",
            "labelled",
            "label_vectors",
        ):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"pool column {name} has {len(value)} rows, chip_ids has {n}")
        self.excluded = self.excluded | self.labelled

    def __len__(self) -> int:
        return len(self.chip_ids)

    @property
    def candidates(self) -> np.ndarray:
        """Boolean mask of chips that may be selected."""
        return ~self.excluded

    def need(self, column: str, strategy: str) -> np.ndarray:
        """A column a strategy cannot work without; a clear error names both when absent."""
        value = getattr(self, column)
        if value is None:
            raise ValueError(f"strategy {strategy!r} needs pool column {column!r}, which is absent")
        return np.asarray(value)


def _embedding_matrix(col: pa.ChunkedArray) -> np.ndarray:
    """(N, D) view of a list<float32> column; rejects ragged rows (one length per version)."""
    arr = col.combine_chunks()
    if isinstance(arr, pa.FixedSizeListArray):
        dim = arr.type.list_size
        values = arr.flatten()
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        dim = int(lengths[0]) if len(lengths) else 0
        if len(lengths) and (lengths != dim).any():
            raise ValueError("embeddings of one model version must all have the same length")
        values = arr.flatten()
    flat = values.to_numpy(zero_copy_only=False)
    return flat.reshape(len(arr), dim)


def _positions(pool_ids: pa.Array, ids: pa.Array) -> np.ndarray:
    """Row of each id in the pool (-1 where the id is not in the pool)."""
    pos = pc.index_in(ids, value_set=pool_ids)
    return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _scatter(n: int, pos: np.ndarray, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
    ok = pos >= 0
    out = np.full((n, *values.shape[1:]), fill, dtype=np.float64)
    out[pos[ok]] = values[ok]
    return out


def _label_vectors(
    labels: pa.Table, pool_ids: pa.Array, n: int, classes: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labelled mask and per-chip class vectors from the ``labels`` table's ``classes`` column.

    Several annotations of one chip are averaged: annotators who disagree make the chip's own
    label uncertain, which kNN disagreement should see. Rows without classes (segmentation,
    whose masks live in rasters) only mark the chip labelled.
    """
    pos = _positions(pool_ids, labels.column("chip_id").combine_chunks())
    labelled = np.zeros(n, dtype=bool)
    labelled[pos[pos >= 0]] = True
    if "classes" not in labels.column_names:
        return labelled, None
    rows = labels.column("classes").to_pylist()
    names = sorted({c for r in rows if r for c in r}) if classes is None else list(classes)
    if not names:
        return labelled, None
    index = {c: i for i, c in enumerate(names)}
    sums = np.zeros((n, len(names)), dtype=np.float32)
    counts = np.zeros(n, dtype=np.float32)
    for p, row in zip(pos, rows, strict=True):
        if p < 0 or not row:
            continue
        hot = [index[c] for c in row if c in index]
        if hot:
            sums[p, hot] += 1.0 / len(hot)
            counts[p] += 1.0
    has = counts > 0
    sums[has] /= counts[has, None]
    return labelled, sums


def pool_from_tables(
    embeddings: pa.Table,
    *,
    chips: pa.Table | None = None,
    predictions: pa.Table | None = None,
    labels: pa.Table | None = None,
    al_rounds: pa.Table | None = None,
    model_version: str | None = None,
    classes: Sequence[str] | None = None,
    label_vectors: Mapping[str, np.ndarray] | None = None,
) -> Pool:
    """Build the pool from tables shaped like the ``store.tables`` contracts.

    ``embeddings`` (one model version; filtered to ``model_version`` when given) defines the
    chips. ``chips`` contributes lon/lat (the embeddings table has no coordinates);
    ``predictions`` the per-chip uncertainty summaries; ``labels`` and ``al_rounds`` the
    exclusions. ``label_vectors`` (chip id → class vector) overrides label vectors, e.g. class
    fractions of segmentation masks, which the labels table only references by href.
    """
    if model_version is not None:
        embeddings = embeddings.filter(pc.equal(embeddings["model_version"], model_version))
    embeddings = embeddings.take(pc.sort_indices(embeddings, [("chip_id", "ascending")]))
    ids = embeddings.column("chip_id").combine_chunks()
    n = len(ids)
    pool = Pool(chip_ids=ids.to_numpy(zero_copy_only=False))
    pool.embeddings = unit_rows(_embedding_matrix(embeddings.column("embedding")))
    if "location_id" in embeddings.column_names:
        codes = pc.dictionary_encode(embeddings.column("location_id").combine_chunks())
        pool.location_codes = codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if "season" in embeddings.column_names:
        pool.season = embeddings.column("season").to_numpy().astype(np.int64)
    if chips is not None:
        pos = _positions(ids, chips.column("chip_id").combine_chunks())
        pool.lon = _scatter(n, pos, chips.column("lon").to_numpy())
        pool.lat = _scatter(n, pos, chips.column("lat").to_numpy())
    if predictions is not None:
        if model_version is not None:
            predictions = predictions.filter(pc.equal(predictions["model_version"], model_version))
        pos = _positions(ids, predictions.column("chip_id").combine_chunks())
        for name in ("mean_entropy", "mean_margin"):
            col = predictions.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            setattr(pool, name, _scatter(n, pos, col))
        hist = predictions.column("class_histogram").to_pylist()
        width = max((len(h) for h in hist if h), default=0)
        if width:
            dense = np.array([h if h else [np.nan] * width for h in hist], dtype=np.float64)
            pool.class_histogram = _scatter(n, pos, dense)
    excluded = np.zeros(n, dtype=bool)
    if al_rounds is not None and al_rounds.num_rows:
        pos = _positions(ids, al_rounds.column("chip_id").combine_chunks())
        excluded[pos[pos >= 0]] = True
    pool.excluded = excluded
    if labels is not None and labels.num_rows:
        pool.labelled, pool.label_vectors = _label_vectors(labels, ids, n, classes)
    if label_vectors:
        _apply_label_overrides(pool, ids, label_vectors)
    pool.excluded = pool.excluded | pool.labelled
    return pool


def _apply_label_overrides(pool: Pool, ids: pa.Array, vectors: Mapping[str, np.ndarray]) -> None:
    keys = list(vectors)
    pos = _positions(ids, pa.array(keys, type=pa.string()))
    width = len(np.asarray(vectors[keys[0]]))
    if pool.label_vectors is None or pool.label_vectors.shape[1] != width:
        pool.label_vectors = np.zeros((len(pool), width), dtype=np.float32)
    for p, key in zip(pos, keys, strict=True):
        if p >= 0:
            v = np.asarray(vectors[key], dtype=np.float32)
            pool.label_vectors[p] = v / max(float(v.sum()), 1e-12)
            pool.labelled[p] = True
