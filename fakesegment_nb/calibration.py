"""Calibrating mask thresholds on real images, numpy only (DESIGN.md section 6: thresholds are
calibrated on real images at a chosen false-positive rate, never hand-set).

Two ways, both used by the maps (:mod:`fakesegment_nb.maps`) and by the pixel baselines of
:mod:`fakesegment_nb.evaluate`:

* one threshold for every image (:func:`calibrate`): the ``1 - fpr`` quantile of scores of real
  (null) locations; :func:`calibrate_batches` finds the very same threshold from float32 scores
  given batch by batch, holding one batch at a time (the full-resolution scores of every real image
  of a large store need not fit in memory);
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

__all__ = ["DEFAULT_FPR", "calibrate", "calibrate_batches", "calibrate_z", "per_image_thresholds", "robust_location", "robust_z",
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


def calibrate_batches(batches, fpr: float = DEFAULT_FPR) -> float:
    """:func:`calibrate` of float32 null scores given in batches, exactly (the same float), with one
    batch in memory at a time.

    ``batches``: a function of no arguments returning an iterable of float32 arrays (any shape,
    NaN and infinities ignored), the same ones each time: it is called twice.

    The quantile interpolates between two order statistics of the finite scores; they are found
    by counting, not sorting: every float32 maps to an integer key in the same order (its bits,
    the negative ones mirrored), the first pass counts the keys' upper 16 bits, the second the lower
    16 bits of the (at most two) upper halves that hold the two ranks, which gives both keys, hence
    both values, exactly.
    """
    if not 0 < fpr < 1:
        raise ParameterError("fpr", f"(the false-positive rate) must be in (0, 1), got {fpr}")
    high = np.zeros(1 << 16, np.int64)
    for b in batches():
        high += np.bincount(_upper(_float_keys(b)), minlength=1 << 16)
    n = int(high.sum())
    if n == 0:
        raise FakesegmentError("no real image scores to calibrate the mask threshold on")
    # np.quantile's linear method: the order statistics at floor(h) and the next, h = (n - 1) q
    h = (n - 1) * np.float64(1 - fpr)
    ranks = (int(np.floor(h)), min(int(np.floor(h)) + 1, n - 1))
    below = np.concatenate([[0], np.cumsum(high)])
    tops = sorted({int(np.searchsorted(below, r, side="right")) - 1 for r in ranks})
    low = {t: np.zeros(1 << 16, np.int64) for t in tops}
    for b in batches():
        k = _float_keys(b)
        top = _upper(k)
        for t in tops:
            low[t] += np.bincount(k[top == t] & 0xFFFF, minlength=1 << 16)
    values = []
    for r in ranks:
        t = int(np.searchsorted(below, r, side="right")) - 1
        lo = int(np.searchsorted(np.cumsum(low[t]), r - below[t], side="right"))
        key = np.array([((t ^ 0x8000) << 16) | lo], np.uint32).view(np.int32)
        values.append(float(_key_floats(key)[0]))
    return float(np.quantile(np.array(values, np.float64), h - np.floor(h)))


def _float_keys(v: np.ndarray) -> np.ndarray:
    """int32 keys of the finite float32 values of ``v`` in their numeric order (-0.0 as 0.0)."""
    v = np.asarray(v)
    if v.dtype != np.float32:
        raise FakesegmentError(f"calibrate_batches takes float32 scores, got {v.dtype}")
    v = v[np.isfinite(v)].ravel() + np.float32(0)  # -0.0 + 0 = +0.0
    i = v.view(np.int32)
    return i ^ ((i >> 31) & 0x7FFFFFFF)


def _upper(k: np.ndarray) -> np.ndarray:
    """The upper 16 bits of int32 keys as 0..65535, in the keys' order."""
    return ((k >> 16) & 0xFFFF) ^ 0x8000


def _key_floats(k: np.ndarray) -> np.ndarray:
    """The float32 values of int32 keys (:func:`_float_keys` inverted)."""
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).view(np.float32)


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
