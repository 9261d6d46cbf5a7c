"""Calibrating mask thresholds on real images, numpy only (DESIGN.md section 6: thresholds are
calibrated on real images at a chosen false-positive rate, never hand-set).

Two ways, both used by the maps (:mod:`fakesegment_nb.maps`) and by the pixel baselines of
:mod:`fakesegment_nb.evaluate`:

* one threshold for every image (:func:`calibrate`): the ``1 - fpr`` quantile of scores of real
  (null) locations;
* one threshold per image (:func:`calibrate_z`, :func:`per_image_thresholds`): every map is
  standardised by its own median and MAD (:func:`robust_location`, :func:`robust_z`), ``z*`` is the
  ``1 - fpr`` quantile of the standardised null maps, and an image's threshold is
  ``median + z* x MAD`` of its own map. The null maps come from real images paired with
  themselves moved a little (:func:`shift_cells` by whole cells or pixels,
  :func:`shift_fraction` by a fraction of a cell).
"""

from __future__ import annotations

import numpy as np

from .errors import FakesegmentError, ParameterError

__all__ = ["DEFAULT_FPR", "calibrate", "calibrate_z", "per_image_thresholds", "robust_location", "robust_z",
           "shift_cells", "shift_fraction"]

DEFAULT_FPR = 0.05


def calibrate(null_scores: np.ndarray, fpr: float = DEFAULT_FPR) -> float:
    """The mask threshold: the ``1 - fpr`` quantile of scores of real (null) locations.

    Parameters
    ----------
    null_scores : scores of locations that are real by construction (any shape; NaN ignored).
    fpr : the share of those locations that the mask may flag, in (0, 1).

    Returns
    -------
    float threshold; a location is in the mask when its score is strictly above it.
    """
    if not 0 < fpr < 1:
        raise ParameterError("fpr", f"(the false-positive rate) must be in (0, 1), got {fpr}")
    v = np.asarray(null_scores, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise FakesegmentError("no real image scores to calibrate the mask threshold on")
    return float(np.quantile(v, 1 - fpr))


def robust_location(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-map median and MAD (scaled to a standard deviation, 1.4826 x) of ``(B, H, W)``
    (NaN ignored); the MAD is at least ``1e-6 x |median|`` so that flat maps stay finite."""
    flat = maps.reshape(maps.shape[0], -1).astype(np.float64)
    med = np.nanmedian(flat, axis=1)
    mad = 1.4826 * np.nanmedian(np.abs(flat - med[:, None]), axis=1)
    floor = 1e-6 * np.maximum(np.abs(med), 1e-12)
    return med, np.maximum(mad, floor)


def robust_z(maps: np.ndarray) -> np.ndarray:
    """Each ``(H, W)`` map of ``(B, H, W)`` standardised by its own median and MAD."""
    med, mad = robust_location(maps)
    return (maps - med[:, None, None]) / mad[:, None, None]


def calibrate_z(null_maps: np.ndarray, fpr: float = DEFAULT_FPR) -> float:
    """``z*``: the ``1 - fpr`` quantile of the null maps ``(B, H, W)``, each standardised by its
    own median and MAD (:func:`robust_z`)."""
    return calibrate(robust_z(null_maps), fpr)


def per_image_thresholds(maps: np.ndarray, z_star: float) -> np.ndarray:
    """``median + z* x MAD`` of each map of ``(B, H, W)``: ``(B,)`` float64 thresholds."""
    med, mad = robust_location(maps)
    return med + z_star * mad


def shift_cells(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move ``(..., h, w)`` maps by whole cells (or pixels), ``dy`` down and ``dx`` right,
    repeating the border."""
    h, w = a.shape[-2:]
    yi = np.clip(np.arange(h) - dy, 0, h - 1)
    xi = np.clip(np.arange(w) - dx, 0, w - 1)
    return a[..., yi, :][..., :, xi]


def shift_fraction(f: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Move ``(..., h, w)`` maps by a fraction (0 <= t <= 1) of a cell along y or x: linear
    interpolation with the neighbouring cell, border repeated; float32."""
    out = f
    if dy:
        out = (1 - dy) * out + dy * shift_cells(out, 1, 0)
    if dx:
        out = (1 - dx) * out + dx * shift_cells(out, 0, 1)
    return out.astype(np.float32, copy=False)
