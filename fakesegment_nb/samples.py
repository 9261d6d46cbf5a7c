"""Per-image vectors of the two domains, as the gap's functions take them (:mod:`fakesegment_nb.gap`,
:mod:`fakesegment_nb.c2st`, :mod:`fakesegment_nb.realism`): checking them, their pairing, and
bootstrap resampling that keeps a synthetic image with its real twin.

Vectors are ``(n, channels)`` float arrays, one row per image; ``pair_of`` gives, per synthetic
vector, the row of its real pair or -1.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_vectors", "two_samples", "all_finite", "check_pairing", "resample", "SEED", "LEVEL", "FOLDS"]

# defaults the gap figures share
LEVEL = 0.90  # coverage of the fid and c2st AUROC intervals
FOLDS = 5  # stratified folds of the classifier test (and of the realism scores' real folds)
SEED = 0


def as_vectors(x, name: str) -> np.ndarray:
    """``x`` as a float64 ``(images, channels)`` array; ``name`` is the argument a ValueError names."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (images, channels), got shape {x.shape}")
    return x


def two_samples(real, synthetic) -> tuple[np.ndarray, np.ndarray]:
    """Both domains' vectors through :func:`as_vectors`, checked to have the same channels."""
    x, y = as_vectors(real, "real"), as_vectors(synthetic, "synthetic")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and synthetic vectors have {x.shape[1]} and {y.shape[1]} channels")
    return x, y


def all_finite(*arrays) -> bool:
    """True when no array holds NaN or inf."""
    return all(np.isfinite(a).all() for a in arrays)


def check_pairing(pair_of, n_real: int, n_syn: int) -> np.ndarray | None:
    """``pair_of`` (per synthetic vector, the row of its real pair in the real vectors, or -1)
    checked and as an int array; None when it is None or pairs nothing. ValueError when it has
    the wrong length, names a row past ``n_real`` or gives one real vector two twins."""
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


def resample(rng, n_real: int, n_syn: int, pair_of, count: int) -> np.ndarray:
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
