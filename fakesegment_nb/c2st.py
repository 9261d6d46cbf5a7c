"""Classifier two-sample test (C2ST) of real against synthetic per-image vectors.

Out-of-fold AUROC of an L2-regularised logistic regression telling real from synthetic
(standardised vectors, stratified k-fold, a pair's two images in one fold), its permutation
p-value ``(1 + #{null >= observed}) / (1 + P)`` with a sequential early stop, and a bootstrap
interval of the AUROC. Many fold fits are solved as one block-diagonal logistic regression
(:func:`_fit_decisions`). One of the gap figures of :func:`fakesegment_nb.gap.layer_gap`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .samples import FOLDS, LEVEL, SEED, all_finite, check_pairing, resample, two_samples

__all__ = ["c2st", "C2STResult", "FOLDS", "PERMUTATIONS", "STOP_AFTER", "C_REG", "AUC_BOOTSTRAP"]

AUC_BOOTSTRAP = 100  # bootstrap replicates of the c2st AUROC (each one a roc_auc_score call)
PERMUTATIONS = 100  # at most; the p-value cannot go below 1 / (1 + PERMUTATIONS)
STOP_AFTER = 10  # stop permuting once this many null AUROCs reach the observed one
C_REG = 0.1  # inverse L2 strength of the logistic regression (on standardised vectors)


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

    x, y = two_samples(real, synthetic)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if permutations < 0:
        raise ValueError(f"permutations must be >= 0, got {permutations}")
    pair_of = check_pairing(pair_of, len(x), len(y))
    if min(len(x), len(y)) < folds:
        return C2STResult(note=f"c2st: {len(x)} real and {len(y)} synthetic images, fewer than "
                               f"folds={folds} in a domain; add images or pass a smaller folds")
    if not all_finite(x, y):
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
    idx = resample(rng, len(x), len(y), pair_of, n_boot)
    boot = _aurocs(labels, dec[idx].T) if n_boot else np.empty(0)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if n_boot else (np.nan, np.nan)
    return C2STResult(auroc=auroc, p=p, lo=float(lo), hi=float(hi),
                      chance=float(np.quantile(null, 0.95)) if len(null) else np.nan,
                      proba=1 / (1 + np.exp(-dec)), folds=folds, permutations=len(null))
