"""How far one layer sees synthetic from real, on one scale, with its uncertainty (DESIGN.md section 5).

Pure functions on per-image vectors, ``(n, channels)`` float arrays (one row per image), so they
serve the stats step, notebooks and tests alike:

* :func:`frechet` -- the Fréchet distance of :func:`~fakesegment_nb.metrics.fid` by the cheapest
  exact route: the trace term ``tr((Σr Σs)^½)`` is the nuclear norm of ``Ar Asᵀ`` where
  ``Σ = AᵀA``, ``A`` = centred vectors / sqrt(n - 1); an ``(nr x ns)`` SVD instead of a
  ``C x C`` eigendecomposition when there are fewer images than channels.
* :func:`fid_interval` -- percentile bootstrap interval of ``fid`` (images resampled with
  replacement within each domain).
* :func:`fid_floor` -- median ``fid`` between two random halves of the real images.
* :func:`c2st` (:mod:`fakesegment_nb.c2st`) -- classifier two-sample test: out-of-fold AUROC of an L2-regularised logistic
  regression telling real from synthetic (standardised vectors, stratified k-fold) and its
  permutation p-value ``(1 + #{null >= observed}) / (1 + P)``.
* :func:`realism_scores` (:mod:`fakesegment_nb.realism`) -- per synthetic image, how far its vector sits from the real images'
  distribution: Mahalanobis distance under a Ledoit-Wolf shrunk covariance of the real vectors,
  divided by the median distance of held-out real images (1 = as typical as a real image).
* :func:`layer_gap` -- all of the above for one layer.

The vectors' checks, pairing and bootstrap resampling are shared (:mod:`fakesegment_nb.samples`).

Degenerate input (too few images, constant or non-finite features) gives NaN and a ``note``
saying why, never an exception from scikit-learn or numpy's linear algebra. Everything random
is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .c2st import AUC_BOOTSTRAP, C_REG, PERMUTATIONS, STOP_AFTER, C2STResult, c2st
from .realism import realism_scores
from .samples import FOLDS, LEVEL, SEED, all_finite, as_vectors, check_pairing, resample, two_samples

# c2st and realism_scores live in their own modules; the gap is all of them, listed here too
__all__ = ["frechet", "fid_interval", "fid_floor", "c2st", "C2STResult", "realism_scores",
           "layer_gap", "LayerGap", "GAP_FIELDS", "EXTRA_FIELDS", "BOOTSTRAP", "LEVEL", "FLOOR_SPLITS", "FOLDS", "PERMUTATIONS",
           "STOP_AFTER", "C_REG", "SEED", "AUC_BOOTSTRAP"]

BOOTSTRAP = 200  # bootstrap replicates of fid
FLOOR_SPLITS = 20  # random half splits of the real images for fid_floor


# --------------------------------------------------------------------------------------------
# Fréchet distance, its bootstrap interval and its noise floor


def _centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(axis=0)
    return mu, (x - mu) / np.sqrt(len(x) - 1)


def frechet(real, synthetic) -> float:
    """Fréchet distance between Gaussians fitted to two sets of vectors (``np.cov``, ddof=1).

    The same quantity as :func:`fakesegment_nb.metrics.fid`:
    ``|μr − μs|² + tr Σr + tr Σs − 2 tr((Σr Σs)^½)``, with ``tr((Σr Σs)^½)`` computed as the
    nuclear norm (sum of singular values) of ``Ar Asᵀ`` (``Σ = AᵀA``, ``A`` the centred
    vectors / sqrt(n − 1)) when either set has fewer vectors than channels, else through the
    symmetric ``C x C`` product ``Σr^½ Σs Σr^½``. Both are exact; neither adds the noise of
    the near-zero eigenvalues of the non-symmetric product. NaN with fewer than 2 vectors in a
    set or non-finite input.
    """
    x, y = two_samples(real, synthetic)
    if len(x) < 2 or len(y) < 2 or not all_finite(x, y):
        return float("nan")
    mx, ax = _centred(x)
    my, ay = _centred(y)
    c = x.shape[1]
    if min(len(x), len(y)) <= c:
        # Σr Σs = Arᵀ (Ar Asᵀ) As: its eigenvalues are the squared singular values of Ar Asᵀ
        root_trace = np.linalg.svd(ax @ ay.T, compute_uv=False).sum()
    else:
        w, v = np.linalg.eigh(ax.T @ ax)
        half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        lam = np.linalg.eigvalsh(half @ (ay.T @ ay) @ half)
        root_trace = np.sqrt(np.clip(lam, 0, None)).sum()
    d = mx - my
    return float(d @ d + (ax * ax).sum() + (ay * ay).sum() - 2 * root_trace)


def _frechet_replicate(x: np.ndarray, y: np.ndarray) -> float:
    """:func:`frechet` for bootstrap and split replicates: the squared singular values of
    ``Ar Asᵀ`` as the eigenvalues of its smaller Gram matrix (``eigvalsh``, ~1.5x faster than
    the SVD; the near-zero ones lose digits, ~1e-8 relative, far below a replicate's spread)."""
    mx, ax = _centred(x)
    my, ay = _centred(y)
    if min(len(x), len(y)) > x.shape[1]:
        return frechet(x, y)
    m = ax @ ay.T
    lam = np.linalg.eigvalsh(m @ m.T if len(x) <= len(y) else m.T @ m)
    d = mx - my
    return float(d @ d + (ax * ax).sum() + (ay * ay).sum() - 2 * np.sqrt(np.clip(lam, 0, None)).sum())


def fid_interval(real, synthetic, *, pair_of=None, n_boot: int = BOOTSTRAP, level: float = LEVEL,
                 seed: int = SEED, estimate: float | None = None) -> tuple[float, float, str]:
    """Percentile bootstrap interval of the Fréchet distance.

    Each replicate resamples the real and the synthetic vectors with replacement, within each
    domain (a paired synthetic image comes with its real pair, ``pair_of`` as in :func:`c2st`:
    the scenes are what was sampled), and recomputes :func:`frechet`; the interval runs from the ``(1 − level)/2`` to the
    ``(1 + level)/2`` quantile of the replicates, bias-corrected: shifted by ``fid − mean of
    the replicates``. Without the shift the interval would often miss ``fid`` altogether: a
    resample holds ~63% distinct images, and the Fréchet distance of fewer distinct vectors is
    biased upward like ``fid`` itself. The lower end is clipped at 0.
    ``estimate``: ``fid`` when already computed (by :func:`fakesegment_nb.metrics.fid`).

    Returns
    -------
    ``(lo, hi, note)``; NaN and a note when either domain has fewer than 2 images or the
    vectors are not finite.
    """
    x, y = two_samples(real, synthetic)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    if len(x) < 2 or len(y) < 2:
        return np.nan, np.nan, "fid interval: needs 2 images per domain"
    if not all_finite(x, y):
        return np.nan, np.nan, "fid interval: non-finite features"
    pair_of = check_pairing(pair_of, len(x), len(y))
    f = frechet(x, y) if estimate is None else float(estimate)
    z = np.concatenate([x, y])
    idx = resample(np.random.default_rng(seed), len(x), len(y), pair_of, n_boot)
    reps = np.array([_frechet_replicate(z[i[:len(x)]], z[i[len(x):]]) for i in idx])
    # the replicates sit above fid by about fid's own finite-sample bias (a resample repeats
    # images, fewer distinct ones widen the fitted Gaussians apart): shift them back by the
    # bootstrap estimate of that bias so that the interval is about fid, not about fid + bias
    shift = reps.mean() - f
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]) - shift
    return float(max(lo, min(0.0, f))), float(hi), ""


def fid_floor(real, *, splits: int = FLOOR_SPLITS, seed: int = SEED) -> tuple[float, str]:
    """The Fréchet distance's noise floor: its median between two random halves of the real
    vectors, over ``splits`` random splits (an odd count of real vectors leaves one out).

    Returns
    -------
    ``(floor, note)``; NaN and a note with fewer than 4 real images (halves of 2) or
    non-finite vectors.
    """
    x = as_vectors(real, "real")
    if splits < 1:
        raise ValueError(f"splits must be at least 1, got {splits}")
    if len(x) < 4:
        return np.nan, f"fid_floor: needs 4 real images for two halves of 2, the store has {len(x)}"
    if not all_finite(x):
        return np.nan, "fid_floor: non-finite features"
    rng = np.random.default_rng(seed)
    half = len(x) // 2
    vals = []
    for _ in range(splits):
        p = rng.permutation(len(x))
        vals.append(_frechet_replicate(x[p[:half]], x[p[half:2 * half]]))
    return float(np.median(vals)), ""


# --------------------------------------------------------------------------------------------
# one layer


@dataclass
class LayerGap:
    """The gap of one layer: ``columns`` (the layers.csv contract columns beyond ``fid``),
    ``extra`` (c2st interval, chance level, folds, permutations, note) and ``scores`` (one per
    synthetic image)."""

    columns: dict
    extra: dict
    scores: np.ndarray


GAP_FIELDS = ["fid_lo", "fid_hi", "fid_floor", "fid_ratio", "c2st_auroc", "c2st_p"]
EXTRA_FIELDS = ["c2st_lo", "c2st_hi", "c2st_chance", "folds", "permutations", "note"]


def layer_gap(real, synthetic, fid_value: float | None = None, *, pair_of=None, folds: int = FOLDS,
              permutations: int = PERMUTATIONS, n_boot: int = BOOTSTRAP, seed: int = SEED,
              scores: bool = True, floor: tuple[float, str] | None = None) -> LayerGap:
    """Every gap figure of one layer from its per-image vectors (see the module docstring).

    ``fid_value``: the layer's ``fid`` when already known (else :func:`frechet` computes it).
    ``floor``: ``fid_floor(real, seed=seed)`` when already known: it depends on the real vectors
    only, so several synthetic sets measured against the same real images share it.
    ``scores``: also compute :func:`realism_scores` (else ``LayerGap.scores`` is empty).
    ``pair_of``: per synthetic vector, the row of its real pair or -1 (see :func:`c2st`).
    """
    x, y = two_samples(real, synthetic)
    f = frechet(x, y) if fid_value is None else float(fid_value)
    lo, hi, n1 = fid_interval(x, y, pair_of=pair_of, n_boot=n_boot, seed=seed, estimate=f)
    floor, n2 = fid_floor(x, seed=seed) if floor is None else floor
    if np.isfinite(floor) and floor <= 0:
        ratio, n3 = np.nan, "fid_ratio: the noise floor is 0 (constant features?)"
    else:
        ratio, n3 = f / floor, ""
    test = c2st(x, y, pair_of=pair_of, folds=folds, permutations=permutations, seed=seed)
    per_image, n4 = (realism_scores(x, y, pair_of=pair_of, folds=folds, seed=seed) if scores
                     else (np.empty(0), ""))
    notes = [n for n in (n1, n2, n3, test.note, n4) if n]
    columns = {"fid_lo": lo, "fid_hi": hi, "fid_floor": floor, "fid_ratio": float(ratio),
               "c2st_auroc": test.auroc, "c2st_p": test.p}
    extra = {"c2st_lo": test.lo, "c2st_hi": test.hi, "c2st_chance": test.chance, "folds": test.folds,
             "permutations": test.permutations, "note": "; ".join(notes)}
    return LayerGap(columns, extra, per_image)
