"""Maps onto images at their own shape: the stored maps are at the network input resolution
(the whole image resized, never cropped, so a 2:1 render is squashed into a square input); the
overlays, and ``evaluate --resolution original``, put them back on the original image's grid.

Resampling is scikit-image's (:func:`skimage.transform.resize`, pixel centres aligned as the
network's own resize aligns them), never a hand-written one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["display_shape", "resize_map"]


def display_shape(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """``(height, width)`` with the aspect ratio of ``size`` (an original ``(height, width)``) and
    its longer side ``long_side`` pixels (each side at least 1)."""
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"an image size must be positive, got {h}x{w}")
    s = float(long_side) / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_map(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``(h, w)`` score map (float, NaN where not scored) or mask (bool) resized to ``shape``.

    Scores: bilinear (order 1), with scikit-image's Gaussian anti-aliasing along an axis that
    shrinks; float32. NaN cells stay NaN (nearest), the rest is interpolated from the finite
    values. Masks: nearest neighbour; bool. The same array is returned when the shape already
    matches.
    """
    from skimage.transform import resize

    a = np.asarray(a)
    shape = (int(shape[0]), int(shape[1]))
    if a.shape == shape:
        return a
    if a.dtype == bool:
        return resize(a, shape, order=0, preserve_range=True, anti_aliasing=False).astype(bool)
    a = a.astype(np.float32, copy=False)
    bad = ~np.isfinite(a)
    if bad.all():
        return np.full(shape, np.nan, np.float32)
    filled = np.where(bad, np.float32(np.mean(a[~bad])), a) if bad.any() else a
    out = resize(filled, shape, order=1, preserve_range=True).astype(np.float32)
    if bad.any():
        out[resize(bad, shape, order=0, preserve_range=True, anti_aliasing=False).astype(bool)] = np.nan
    return out
