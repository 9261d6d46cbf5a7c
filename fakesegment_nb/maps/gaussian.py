"""The ``reference`` method's Gaussian distribution model (PaDiM, Defard et al. 2021): a
Gaussian fitted to real feature vectors with its covariance shrunk towards a multiple of the
identity, and the squared Mahalanobis distance to it -- as a whole and split by channel.

Fit and distance are pure functions of the vectors they are given; reading them from a store
is :func:`fit_layer_gaussian`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from .features import batches, centre, read_features

__all__ = ["Gaussian", "fit_gaussian", "fit_layer_gaussian", "mahalanobis", "mahalanobis_terms"]


@dataclass(frozen=True)
class Gaussian:
    """A fitted Gaussian of ``C``-channel feature vectors.

    Attributes
    ----------
    mean : ``(C,)`` float64.
    precision : ``(C, C)`` float64, the inverse of the shrunk covariance.
    """

    mean: np.ndarray
    precision: np.ndarray


def fit_gaussian(vectors: Iterable[np.ndarray], shrinkage: float) -> Gaussian:
    """Mean and shrunk precision of feature vectors given in batches of ``(n, C)``.

    The covariance ``S`` (unbiased) is shrunk towards a multiple of the identity with the same
    trace, ``(1 - a) S + a tr(S) / C I`` with ``a = shrinkage`` (Ledoit & Wolf's target), so that
    it stays invertible with fewer vectors than channels. Sums are accumulated in float64.
    """
    s1 = s2 = None
    n = 0
    for v in vectors:
        v = np.asarray(v, np.float64)
        if s1 is None:
            s1, s2 = np.zeros(v.shape[1]), np.zeros((v.shape[1], v.shape[1]))
        s1 += v.sum(0)
        s2 += v.T @ v
        n += v.shape[0]
    c = s1.size
    mean = s1 / n
    cov = (s2 - n * np.outer(mean, mean)) / max(n - 1, 1)
    target = np.trace(cov) / c
    shrunk = (1 - shrinkage) * cov + shrinkage * max(target, 1e-12) * np.eye(c)
    return Gaussian(mean, np.linalg.inv(shrunk))


def mahalanobis(v: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance divided by the number of channels, ``(v - m)' P (v - m) / C``,
    of rows ``v`` ``(N, C)``; ``mean`` and ``precision`` as tensors of ``v``'s dtype."""
    v = v - mean
    return ((v @ precision) * v).sum(1) / v.shape[1]


def mahalanobis_terms(v: np.ndarray, g: Gaussian) -> np.ndarray:
    """The squared Mahalanobis distance of rows ``v`` ``(N, C)`` split by channel, float64
    ``(N, C)``: ``d_c (P d)_c`` with ``d = v - mean`` (they sum to ``d' P d``; a channel may
    contribute negatively)."""
    d = np.asarray(v, np.float64) - g.mean
    return d * (d @ g.precision)


def fit_layer_gaussian(tree, layer: str, idx: np.ndarray, shrinkage: float, batch_size: int = 16,
                       centre_features: bool = False) -> Gaussian:
    """:func:`fit_gaussian` of a layer's feature vectors (every location) of images ``idx``;
    ``centre_features``: of the features minus each image's per-channel median."""
    c = tree["layers"][layer]["features"].shape[1]

    def vectors():
        for b in batches(idx.size, batch_size):
            v = read_features(tree, layer, idx[b])
            yield (centre(v) if centre_features else v).transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)

    return fit_gaussian(vectors(), shrinkage)
