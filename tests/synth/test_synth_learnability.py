"""The crop-type signal is learnable from pixels, but one date is not enough.

A nearest-centroid classifier (Mahalanobis distance with the pooled within-class covariance,
i.e. LDA with equal priors) is trained on even parcel ids and tested on odd ones, so train and
test never share a field. Measured on the nearly cloud-free tiny preset (seeds 0-4): single
dates 0.45-0.78 balanced accuracy, all three dates 0.86-0.96; chance is 1/6.
"""

from __future__ import annotations

import numpy as np
from conftest import ArchiveReader

BANDS = ("blue", "green", "red", "nir")


def _dataset(reader: ArchiveReader) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, split, ok = [], [], [], []
    for tile in reader.m.tiles:
        crop = reader.label(tile, "croptype").ravel()
        parcel = reader.label(tile, "parcels").ravel()
        scenes = sorted(reader.scenes(tile), key=lambda s: s.datetime)
        feats = np.stack(
            [np.stack([reader.reflectance(s, b).ravel() for b in BANDS], -1) for s in scenes], 1
        )  # pixels × dates × bands
        clear = np.stack([reader.clear10(s).ravel() for s in scenes], 1) & np.isfinite(feats).all(
            -1
        )
        keep = crop > 0
        xs.append(feats[keep])
        ys.append(crop[keep])
        split.append(parcel[keep] % 2)
        ok.append(clear[keep])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(split), np.concatenate(ok)


def _balanced_accuracy(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    classes = np.unique(ytr)
    centroids = np.stack([xtr[ytr == c].mean(0) for c in classes])
    cov = np.mean([np.cov(xtr[ytr == c].T) for c in classes], axis=0)
    cov = np.atleast_2d(cov) + 1e-8 * np.eye(xtr.shape[1])
    whiten = np.linalg.cholesky(np.linalg.inv(cov))
    dist = (((xte[:, None, :] - centroids[None]) @ whiten) ** 2).sum(-1)
    pred = classes[dist.argmin(1)]
    return float(np.mean([(pred[yte == c] == c).mean() for c in classes if (yte == c).any()]))


def test_single_date_is_ambiguous_time_series_is_not(clear_reader: ArchiveReader) -> None:
    x, y, split, ok = _dataset(clear_reader)
    train, test = split == 0, split == 1
    n_dates = x.shape[1]
    single = []
    for d in range(n_dates):
        tr, te = train & ok[:, d], test & ok[:, d]
        single.append(_balanced_accuracy(x[tr, d], y[tr], x[te, d], y[te]))
    chance = 1 / 6
    assert all(acc > chance + 0.1 for acc in single), single
    assert max(single) > 0.45, single
    assert max(single) < 0.85, f"one date should not suffice: {single}"

    every = ok.all(1)
    tr, te = train & every, test & every
    flat = x.reshape(len(x), -1)
    all_dates = _balanced_accuracy(flat[tr], y[tr], flat[te], y[te])
    same_pixels = [_balanced_accuracy(x[tr, d], y[tr], x[te, d], y[te]) for d in range(n_dates)]
    assert all_dates > max(same_pixels) + 0.05, (all_dates, same_pixels)
    assert all_dates < 0.98, "the task must not be trivial"
