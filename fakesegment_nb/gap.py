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
* :func:`c2st` -- classifier two-sample test: out-of-fold AUROC of an L2-regularised logistic
  regression telling real from synthetic (standardised vectors, stratified k-fold) and its
  permutation p-value ``(1 + #{null >= observed}) / (1 + P)``.
* :func:`realism_scores` -- per synthetic image, how far its vector sits from the real images'
  distribution: Mahalanobis distance under a Ledoit-Wolf shrunk covariance of the real vectors,
  divided by the median distance of held-out real images (1 = as typical as a real image).
* :func:`layer_gap` -- all of the above for one layer.

Degenerate input (too few images, constant or non-finite features) gives NaN and a ``note``
saying why, never an exception from scikit-learn or numpy's linear algebra. Everything random
is seeded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["frechet", "fid_interval", "fid_floor", "c2st", "C2STResult", "realism_scores",
           "layer_gap", "LayerGap", "GAP_FIELDS", "EXTRA_FIELDS", "BOOTSTRAP", "LEVEL", "FLOOR_SPLITS", "FOLDS", "PERMUTATIONS",
           "STOP_AFTER", "C_REG", "SEED", "AUC_BOOTSTRAP"]

BOOTSTRAP = 200  # bootstrap replicates of fid
AUC_BOOTSTRAP = 100  # bootstrap replicates of the c2st AUROC (each one a roc_auc_score call)
LEVEL = 0.90  # coverage of the fid interval
FLOOR_SPLITS = 20  # random half splits of the real images for fid_floor
FOLDS = 5  # stratified folds of the classifier test
PERMUTATIONS = 100  # at most; the p-value cannot go below 1 / (1 + PERMUTATIONS)
STOP_AFTER = 10  # stop permuting once this many null AUROCs reach the observed one
C_REG = 0.1  # inverse L2 strength of the logistic regression (on standardised vectors)
SEED = 0


def _as_vectors(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (images, channels), got shape {x.shape}")
    return x


def _pair(real, synthetic) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_vectors(real, "real"), _as_vectors(synthetic, "synthetic")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and synthetic vectors have {x.shape[1]} and {y.shape[1]} channels")
    return x, y


def _finite(*arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays)


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
    x, y = _pair(real, synthetic)
    if len(x) < 2 or len(y) < 2 or not _finite(x, y):
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
    x, y = _pair(real, synthetic)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    if len(x) < 2 or len(y) < 2:
        return np.nan, np.nan, "fid interval: needs 2 images per domain"
    if not _finite(x, y):
        return np.nan, np.nan, "fid interval: non-finite features"
    pair_of = _pairing(pair_of, len(x), len(y))
    f = frechet(x, y) if estimate is None else float(estimate)
    z = np.concatenate([x, y])
    idx = _resample(np.random.default_rng(seed), len(x), len(y), pair_of, n_boot)
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
    x = _as_vectors(real, "real")
    if splits < 1:
        raise ValueError(f"splits must be at least 1, got {splits}")
    if len(x) < 4:
        return np.nan, f"fid_floor: needs 4 real images for two halves of 2, the store has {len(x)}"
    if not _finite(x):
        return np.nan, "fid_floor: non-finite features"
    rng = np.random.default_rng(seed)
    half = len(x) // 2
    vals = []
    for _ in range(splits):
        p = rng.permutation(len(x))
        vals.append(_frechet_replicate(x[p[:half]], x[p[half:2 * half]]))
    return float(np.median(vals)), ""


# --------------------------------------------------------------------------------------------
# classifier two-sample test


@dataclass
class C2STResult:
    """Outcome of :func:`c2st`.

    ``auroc``: out-of-fold AUROC (0.5 = chance; cross-validated values scatter slightly below
    0.5 under the null). ``p``: permutation p-value. ``lo, hi``: percentile bootstrap interval
    of ``auroc`` from resampling the out-of-fold scores within each domain (the fitted models
    held fixed). ``chance``: the 95th percentile of the permutation AUROCs. ``proba``: out-of-fold
    probability of "synthetic", real vectors first, then synthetic. ``permutations``: how many
    were run. ``note``: why a value is NaN ('' if none is).
    """

    auroc: float = np.nan
    p: float = np.nan
    lo: float = np.nan
    hi: float = np.nan
    chance: float = np.nan
    proba: np.ndarray = field(default_factory=lambda: np.empty(0))
    folds: int = 0
    permutations: int = 0
    note: str = ""


def _standardised_basis(z: np.ndarray) -> np.ndarray:
    """Standardise the pooled vectors (label-free) and, when there are fewer vectors than
    channels, rotate them onto the orthonormal basis of their row space.

    An L2-penalised linear model's weights lie in the span of its training vectors (the
    penalty's gradient is the weight, the loss's a combination of the vectors), and a rotation
    keeps both the penalty and every inner product: the fits and the out-of-fold decisions are
    those on the full vectors, at the cost of ``n`` instead of ``C`` features.
    """
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit_transform(z)
    if len(z) < z.shape[1]:
        u, s, _ = np.linalg.svd(z, full_matrices=False)
        keep = s > s.max() * max(z.shape) * np.finfo(float).eps if s.size and s.max() > 0 else s > 0
        z = u[:, keep] * s[keep]
    return z


BLOCK_NNZ = 2_000_000  # stored values per joint fit (about 24 MB of CSR)
TOL = 1e-4  # lbfgs gradient tolerance of each fold's fit (scikit-learn's default)


def _folds(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list:
    """``(train, test)`` index arrays of stratified folds (pairs kept in one fold)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(labels)), labels, groups))


def _fit_decisions(z: np.ndarray, orders: list, labels: np.ndarray, splits: list, c_reg: float) -> np.ndarray:
    """Out-of-fold decisions, ``(n, len(orders))``: for each row order of ``z`` (the images
    reassigned to the slots; never materialised whole), one L2 logistic regression per fold of
    ``splits``.

    The fits are independent problems, and the sum of their objectives separates over their
    weights, so scikit-learn solves a batch of them as ONE logistic regression on a sparse
    block-diagonal design (each fit's training vectors in columns of their own, plus a column
    of ones as its intercept, penalised like a weight): the same minimiser as each fit on its
    own, and a few hundred fold fits on small stores cost one solver run instead of a few
    hundred calls' overhead. sklearn averages the loss over all rows of a batch, so the
    gradient tolerance is divided by the number of fits in it.
    """
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    n, r1 = len(labels), z.shape[1] + 1
    tasks = [(j, train, test) for j in range(len(orders)) for train, test in splits]
    per_batch = max(1, BLOCK_NNZ // max(1, r1 * max(len(t[1]) for t in tasks)))
    out = np.empty((n, len(orders)))
    for start in range(0, len(tasks), per_batch):
        batch = tasks[start:start + per_batch]
        blocks = [np.hstack([z[orders[j][train]], np.ones((len(train), 1))]) for j, train, _ in batch]
        rows = sum(len(b) for b in blocks)
        if len(blocks) == 1:  # one fit (large stores): a dense design is cheaper than a sparse one
            design = blocks[0]
        else:
            design = sp.csr_matrix(
                (np.concatenate([b.ravel() for b in blocks]),
                 np.concatenate([np.tile(i * r1 + np.arange(r1), len(b)) for i, b in enumerate(blocks)]),
                 np.arange(rows + 1) * r1), shape=(rows, len(batch) * r1))
        target = np.concatenate([labels[train] for _, train, _ in batch])
        model = LogisticRegression(C=c_reg, fit_intercept=False, solver="lbfgs", max_iter=10_000,
                                   tol=TOL / len(batch)).fit(design, target)
        w = model.coef_.reshape(len(batch), r1)
        for i, (j, _, test) in enumerate(batch):
            out[test, j] = z[orders[j][test]] @ w[i, :-1] + w[i, -1]
    return out


def _aurocs(labels: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """AUROC of each column of ``dec`` (synthetic = 1 scores high), as the Mann-Whitney U of
    the synthetic decisions over (n_synthetic x n_real): the identity AUROC = U / (n1 n0),
    vectorised over replicates by scipy (``roc_auc_score`` gives the observed value; the
    tests check the two agree)."""
    from scipy.stats import mannwhitneyu

    pos, neg = dec[labels == 1], dec[labels == 0]
    return mannwhitneyu(pos, neg, axis=0, method="asymptotic").statistic / (len(pos) * len(neg))


def _null_orders(rng, n_real: int, n_syn: int, pair_of: np.ndarray | None, count: int) -> list:
    """Row orders for the permutation null: images reassigned at random to the observed
    (label, fold) slots -- among all images, or, when ``pair_of`` pairs synthetic images with
    real ones, a pair's two images swapped with probability 1/2 and the unpaired ones shuffled
    among themselves (under the null only those are exchangeable)."""
    n = n_real + n_syn
    orders = []
    for _ in range(count):
        if pair_of is None:
            orders.append(rng.permutation(n))
            continue
        order = np.arange(n)
        paired_syn = np.flatnonzero(pair_of >= 0)
        r, sy = pair_of[paired_syn], n_real + paired_syn
        swap = rng.random(len(r)) < 0.5
        order[r[swap]], order[sy[swap]] = sy[swap], r[swap]
        free = np.setdiff1d(np.arange(n), np.concatenate([r, sy]))
        order[free] = free[rng.permutation(len(free))]
        orders.append(order)
    return orders


def _pairing(pair_of, n_real: int, n_syn: int) -> np.ndarray | None:
    if pair_of is None:
        return None
    pair_of = np.asarray(pair_of, dtype=int)
    if pair_of.shape != (n_syn,) or pair_of.max(initial=-1) >= n_real:
        raise ValueError(f"pair_of must hold one real index (or -1) per synthetic vector: {n_syn} "
                         f"values below {n_real}, got shape {pair_of.shape}")
    paired = pair_of[pair_of >= 0]
    if len(np.unique(paired)) != len(paired):
        raise ValueError("pair_of pairs a real vector with several synthetic ones")
    return pair_of if len(paired) else None


def c2st(real, synthetic, *, pair_of=None, folds: int = FOLDS, permutations: int = PERMUTATIONS,
         stop_after: int | None = STOP_AFTER, c_reg: float = C_REG, n_boot: int = AUC_BOOTSTRAP,
         level: float = LEVEL, seed: int = SEED) -> C2STResult:
    """Classifier two-sample test of real against synthetic vectors.

    A logistic regression (scikit-learn, lbfgs, L2 with inverse strength ``c_reg`` on the
    weights and on the intercept, a column of ones) on the standardised vectors is fitted in a
    stratified ``folds``-fold split (``StratifiedKFold``; ``StratifiedGroupKFold`` with a pair's
    two images in one fold when ``pair_of`` is given, else a synthetic twin in the training
    folds would label its real image "synthetic"); ``auroc`` is the ``roc_auc_score`` of the
    pooled out-of-fold decisions. The null refits the same folds with the images reassigned
    at random to the (label, fold) slots (see :func:`_null_orders`; an exact permutation test):
    ``p = (1 + #{null AUROC >= observed}) / (1 + P)``, so its floor is
    ``1 / (1 + permutations)``. With ``stop_after`` set, permuting stops once that many null
    AUROCs have reached the observed one (Besag & Clifford 1991, sequential Monte Carlo
    p-values): the p-value is then large anyway and ``P`` counts the permutations used.

    Parameters
    ----------
    real, synthetic : ``(n, channels)`` vectors.
    pair_of : per synthetic vector, the row of its real pair in ``real``, or -1 (None: unpaired).
    folds : stratified folds; each domain needs at least this many images.
    permutations : maximum number of permutations (0: no p-value).
    stop_after : see above; None runs all permutations.
    c_reg : logistic regression's ``C``.
    n_boot, level : bootstrap replicates and coverage of the AUROC interval.
    seed : seeds the folds, the permutations and the bootstrap.

    Returns
    -------
    :class:`C2STResult`; NaN values and a ``note`` when a domain has fewer images than
    ``folds``, the vectors are not finite, or every channel is constant.
    """
    from sklearn.metrics import roc_auc_score

    x, y = _pair(real, synthetic)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if permutations < 0:
        raise ValueError(f"permutations must be >= 0, got {permutations}")
    pair_of = _pairing(pair_of, len(x), len(y))
    if min(len(x), len(y)) < folds:
        return C2STResult(note=f"c2st: {len(x)} real and {len(y)} synthetic images, fewer than "
                               f"folds={folds} in a domain; add images or pass a smaller folds")
    if not _finite(x, y):
        return C2STResult(note="c2st: non-finite features")
    z = np.concatenate([x, y])
    varying = np.ptp(z, axis=0) > 0
    if not varying.any():
        return C2STResult(note="c2st: every channel is constant over the images; nothing to classify")
    labels = np.r_[np.zeros(len(x), int), np.ones(len(y), int)]
    groups = None
    if pair_of is not None:
        groups = np.r_[np.arange(len(x)), np.where(pair_of >= 0, pair_of, len(x) + np.arange(len(y)))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence chatter on separable folds
        z = _standardised_basis(z[:, varying])
        splits = _folds(labels, groups, folds, seed)
        dec = _fit_decisions(z, [np.arange(len(z))], labels, splits, c_reg)[:, 0]
        auroc = float(roc_auc_score(labels, dec))
        obs = _aurocs(labels, dec[:, None])[0]  # the same number by the replicates' route
        rng = np.random.default_rng(seed)
        orders = _null_orders(rng, len(x), len(y), pair_of, permutations)
        chunk = 10 if stop_after else max(1, permutations)
        null, start = np.empty(0), 0
        while start < permutations:  # in growing chunks (10, 20, 40, ...), to stop early
            part = orders[start:start + chunk]
            null = np.r_[null, _aurocs(labels, _fit_decisions(z, part, labels, splits, c_reg))]
            start, chunk = start + len(part), 2 * chunk
            hits = np.flatnonzero(null >= obs - 1e-12)
            if stop_after and len(hits) >= stop_after:
                null = null[:hits[stop_after - 1] + 1]
                break
    p = float((1 + (null >= obs - 1e-12).sum()) / (1 + len(null))) if len(null) else np.nan
    # interval: bootstrap the out-of-fold decisions within each domain (pairs together)
    rng = np.random.default_rng(seed)
    idx = _resample(rng, len(x), len(y), pair_of, n_boot)
    boot = _aurocs(labels, dec[idx].T) if n_boot else np.empty(0)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if n_boot else (np.nan, np.nan)
    return C2STResult(auroc=auroc, p=p, lo=float(lo), hi=float(hi),
                      chance=float(np.quantile(null, 0.95)) if len(null) else np.nan,
                      proba=1 / (1 + np.exp(-dec)), folds=folds, permutations=len(null))


def _resample(rng, n_real: int, n_syn: int, pair_of, count: int) -> np.ndarray:
    """``(count, n_real + n_syn)`` bootstrap row indices into the stacked real + synthetic
    vectors: each domain resampled with replacement into its own slots; a resampled pair
    brings both its images (its real one into the real slots, its twin into the synthetic)."""
    if pair_of is None:
        return np.hstack([rng.integers(0, n_real, (count, n_real)),
                          n_real + rng.integers(0, n_syn, (count, n_syn))])
    paired = np.flatnonzero(pair_of >= 0)
    real_free = np.setdiff1d(np.arange(n_real), pair_of[paired])
    syn_free = np.setdiff1d(np.arange(n_syn), paired)
    pick = paired[rng.integers(0, len(paired), (count, len(paired)))]
    parts_r = [pair_of[pick]]
    parts_s = [n_real + pick]
    if len(real_free):
        parts_r.append(real_free[rng.integers(0, len(real_free), (count, len(real_free)))])
    if len(syn_free):
        parts_s.append(n_real + syn_free[rng.integers(0, len(syn_free), (count, len(syn_free)))])
    return np.hstack(parts_r + parts_s)


# --------------------------------------------------------------------------------------------
# per-image realism


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

    x, y = _pair(real, synthetic)
    pair_of = _pairing(pair_of, len(x), len(y))
    nan = np.full(len(y), np.nan)
    if len(x) < 3:
        return nan, f"score: needs 3 real images (the store has {len(x)})"
    if not _finite(x, y):
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
              scores: bool = True) -> LayerGap:
    """Every gap figure of one layer from its per-image vectors (see the module docstring).

    ``fid_value``: the layer's ``fid`` when already known (else :func:`frechet` computes it).
    ``scores``: also compute :func:`realism_scores` (else ``LayerGap.scores`` is empty).
    ``pair_of``: per synthetic vector, the row of its real pair or -1 (see :func:`c2st`).
    """
    x, y = _pair(real, synthetic)
    f = frechet(x, y) if fid_value is None else float(fid_value)
    lo, hi, n1 = fid_interval(x, y, pair_of=pair_of, n_boot=n_boot, seed=seed, estimate=f)
    floor, n2 = fid_floor(x, seed=seed)
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
