"""Per synthetic image, how unrealistic it looks to one layer: :func:`realism_scores`.

Its distance to the real images' distribution (Mahalanobis under a Ledoit-Wolf shrunk
covariance of the real vectors), in units of a held-out real image's (1 = as typical as a real
image). ``images.csv`` ranks the synthetic images by it (:mod:`fakesegment_nb.stats`).
"""

from __future__ import annotations

import numpy as np

from .samples import FOLDS, SEED, all_finite, check_pairing, two_samples

__all__ = ["realism_scores"]


def _shrunk_model(train: np.ndarray):
    """Mahalanobis distance under the Ledoit-Wolf covariance of ``train``, as a function.

    ``Σ = (1 − δ) S + δ μ I`` (``S`` the ddof=0 covariance, ``μ = tr S / C``, ``δ`` from
    :func:`sklearn.covariance.ledoit_wolf_shrinkage`), inverted through the SVD of the centred
    training vectors: ``O(n² C)`` instead of ``O(C³)`` when ``n < C``.
    """
    from sklearn.covariance import ledoit_wolf_shrinkage

    mu = train.mean(axis=0)
    a = train - mu
    n, c = a.shape
    delta = float(ledoit_wolf_shrinkage(a, assume_centered=True)) if n > 1 else 1.0
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    ev = s ** 2 / n  # nonzero eigenvalues of S
    iso = delta * ev.sum() / c  # δ μ
    inside = (1 - delta) * ev + iso
    ok = inside > 0

    def dist(v: np.ndarray) -> np.ndarray:
        d = v - mu
        proj = d @ vt[ok].T
        sq = (proj ** 2 / inside[ok]).sum(axis=1)
        if iso > 0:  # the part outside the training vectors' span sees only the shrinkage
            sq = sq + np.clip((d * d).sum(axis=1) - (proj ** 2).sum(axis=1), 0, None) / iso
        return np.sqrt(sq)

    return dist


def realism_scores(real, synthetic, *, pair_of=None, folds: int = FOLDS,
                   seed: int = SEED) -> tuple[np.ndarray, str]:
    """How unrealistic each synthetic vector is: its distance to the real vectors' distribution,
    in units of a typical real image's (higher = less realistic; 1 = as typical as a real image).

    Channels are standardised by the real vectors' mean and std (channels constant over the
    real images are left out); the real vectors are split into ``min(folds, n_real)`` folds;
    on each fold's complement a Gaussian with Ledoit-Wolf shrunk covariance is fitted and
    gives the Mahalanobis distance of the held-out real vectors and of every synthetic
    vector. ``score = mean over folds of the synthetic vector's distance / median held-out
    real distance``; a synthetic image paired with a real one (``pair_of`` as in :func:`c2st`)
    is measured only by the fold model its real twin was held out of -- a model that has seen
    the twin would call the render realistic because it resembles its own source. The score of
    one synthetic image does not depend on the other synthetic images.

    Returns
    -------
    ``(scores, note)``: one score per synthetic vector; NaN and a note with fewer than 3 real
    images, non-finite vectors or no channel that varies over the real images.
    """
    from sklearn.model_selection import KFold

    x, y = two_samples(real, synthetic)
    pair_of = check_pairing(pair_of, len(x), len(y))
    nan = np.full(len(y), np.nan)
    if len(x) < 3:
        return nan, f"score: needs 3 real images (the store has {len(x)})"
    if not all_finite(x, y):
        return nan, "score: non-finite features"
    sd = x.std(axis=0, ddof=1)
    keep = sd > 0
    if not keep.any():
        return nan, "score: every channel is constant over the real images"
    note = "" if keep.all() else f"score: {int((~keep).sum())} channels constant over the real images left out"
    m = x[:, keep].mean(axis=0)
    zx, zy = (x[:, keep] - m) / sd[keep], (y[:, keep] - m) / sd[keep]
    k = min(folds, len(x))
    held = np.empty(len(x))
    syn = np.zeros(len(y))
    unpaired = np.ones(len(y), bool) if pair_of is None else pair_of < 0
    for train, test in KFold(k, shuffle=True, random_state=seed).split(zx):
        dist = _shrunk_model(zx[train])
        held[test] = dist(zx[test])
        d = dist(zy)
        syn[unpaired] += d[unpaired] / k
        if pair_of is not None:
            twin_out = np.isin(pair_of, test)
            syn[twin_out] = d[twin_out]
    scale = float(np.median(held))
    if not scale > 0:
        return nan, "score: held-out real images sit at distance 0 (duplicated real images?)"
    return syn / scale, note
