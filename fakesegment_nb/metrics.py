"""Distribution distances between real and synthetic feature vectors (DESIGN.md section 5).

Pure numpy functions on ``(n, d)`` arrays of float64 vectors, one row per image (or per
location). They return NaN where a definition has no value (too few samples, NaN or inf in
the input) instead of failing inside the linear algebra.
"""

from __future__ import annotations

import warnings

import numpy as np


def _vectors(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples, dimensions), got shape {x.shape}")
    return x


def _check_dims(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"vectors of {x.shape[1]} and {y.shape[1]} dimensions cannot be compared")


def frechet_from_moments(mu1, cov1, mu2, cov2) -> float:
    """Fréchet distance between two Gaussians ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))``, the trace of the square root
    taken as the sum of the square roots of the real parts of the eigenvalues of
    ``cov1 @ cov2``, clipped at 0 (stable when the covariances are singular).
    NaN if any input is NaN or inf.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if not all(np.isfinite(a).all() for a in (mu1, mu2, cov1, cov2)):
        return float("nan")
    eig = np.linalg.eigvals(cov1 @ cov2)
    sqrt_trace = np.sqrt(np.clip(eig.real, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * sqrt_trace)


def fid(real, synthetic) -> float:
    """Fréchet distance between Gaussians fitted to two sets of vectors (``np.cov``, ddof=1).

    Parameters
    ----------
    real, synthetic : arrays ``(n, d)``, one vector per row.

    Returns
    -------
    float; NaN when either set has fewer than 2 vectors or holds NaN or inf.
    """
    x, y = _vectors(real, "real"), _vectors(synthetic, "synthetic")
    _check_dims(x, y)
    if len(x) < 2 or len(y) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    cx = np.atleast_2d(np.cov(x, rowvar=False))
    cy = np.atleast_2d(np.cov(y, rowvar=False))
    return frechet_from_moments(x.mean(0), cx, y.mean(0), cy)


def kid(real, synthetic) -> float:
    """Kernel inception distance: unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``.

    All vectors are used (no subsets). NaN when either set has fewer than 2 vectors or holds
    NaN or inf.
    """
    x, y = _vectors(real, "real"), _vectors(synthetic, "synthetic")
    _check_dims(x, y)
    m, n = len(x), len(y)
    if m < 2 or n < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def cohens_d(real, synthetic, axis: int = 0) -> np.ndarray:
    """Cohen's d of ``synthetic - real`` along ``axis`` with the pooled (ddof=1) std.

    NaN where the pooled std is 0 or undefined (fewer than 3 samples in all).
    """
    x, y = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    m, n = x.shape[axis], y.shape[axis]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if m + n < 3:
            return np.full(np.delete(x.shape, axis), np.nan) if x.ndim > 1 else np.float64(np.nan)
        vx = x.var(axis=axis, ddof=1) if m > 1 else np.zeros(np.delete(x.shape, axis))
        vy = y.var(axis=axis, ddof=1) if n > 1 else np.zeros(np.delete(y.shape, axis))
        pooled = np.sqrt(((m - 1) * vx + (n - 1) * vy) / (m + n - 2))
        d = (y.mean(axis=axis) - x.mean(axis=axis)) / pooled
        return np.where(pooled > 0, d, np.nan)
