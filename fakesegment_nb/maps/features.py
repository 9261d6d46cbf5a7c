"""Feature access for the maps: reading a layer's stored features, the pairs of a store, and the
real images' per-channel spread that both map methods standardise features by.

Everything here reads the feature store (DESIGN.md section 3) and nothing else: no network, no
image files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import FakesegmentError
from ..store import as_tree as store_tree
from ..store import layer_names, partners

__all__ = ["MAX_REAL_FOR_SPREAD", "as_tree", "batches", "centre", "content_descriptors", "image_pairs", "input_size", "read_features",
           "real_spread", "set_of_images"]

# the real images the per-channel spread is estimated from, at most (a seeded random sample)
MAX_REAL_FOR_SPREAD = 256


def as_tree(store) -> xr.DataTree:
    """``store`` opened without dask (lazily indexed numpy: fast single-image reads), or itself if
    it already is an open tree."""
    return store_tree(store, chunks=None)


def input_size(tree) -> tuple[int, int]:
    """The network input size ``(H, W)`` recorded in the store's root attributes."""
    size = tree.attrs.get("input_size")
    if not size:
        raise FakesegmentError("the store has no input_size attribute; re-extract it")
    size = list(size)
    return (int(size[0]), int(size[-1]))


def image_pairs(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions of (synthetic image, its real partner) for every usable pair of the image table
    (:func:`fakesegment_nb.store.partners`)."""
    found = partners(table)
    return found["i_syn"].to_numpy(int), found["i_real"].to_numpy(int)


def set_of_images(table: pd.DataFrame) -> np.ndarray:
    """The synthetic set of every image ("" for real images); ``"synthetic"`` for a store written
    before sets existed (DESIGN.md section 3)."""
    dom = table["domain"].to_numpy()
    sets = table["set"].astype(str).to_numpy() if "set" in table else np.where(dom == "synthetic", "synthetic", "")
    return np.where(dom == "synthetic", np.where(sets == "", "synthetic", sets), "")


def batches(n: int, size: int):
    """Slices of ``range(n)`` of at most ``size`` items."""
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def read_features(tree, layer: str, idx: np.ndarray) -> np.ndarray:
    """float32 ``(len(idx), C, h, w)`` rows of a layer, in the order of ``idx`` (non-finite
    values -> 0)."""
    var = tree["layers"][layer]["features"].variable
    idx = np.asarray(idx, dtype=int)
    if idx.size == 0:
        return np.zeros((0, *var.shape[1:]), np.float32)
    order = np.argsort(idx)
    arr = np.asarray(var[np.sort(idx)].values, dtype=np.float32)
    out = np.empty_like(arr)
    out[order] = arr
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def centre(f: np.ndarray) -> np.ndarray:
    """``(B, C, h, w)`` features minus each image's per-channel median over locations: an
    image-wide change of a channel (exposure, white balance, missing grain) is not a local detail."""
    return f - np.median(f.reshape(*f.shape[:2], -1), axis=2)[:, :, None, None]


def content_descriptors(tree, idx: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """One descriptor per stored image ``idx``: the per-channel spatial mean of the store's coarsest
    layer (the most semantic: what the image shows rather than how it was made), standardised per
    channel over ``idx``; ``(len(idx), C)`` float32. Read ``batch_size`` images at a time."""
    layers = layer_names(tree)
    coarsest = min(layers, key=lambda l: int(np.prod(tree["layers"][l]["features"].shape[2:])))
    x = np.concatenate([read_features(tree, coarsest, np.asarray(idx)[b]).mean(axis=(2, 3))
                        for b in batches(len(idx), batch_size)]) if len(idx) else np.zeros((0, 1), np.float32)
    return ((x - x.mean(0)) / (x.std(0) + 1e-6)).astype(np.float32)


def real_spread(tree, layer: str, real_idx: np.ndarray, rng: np.random.Generator,
                centre_features: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and spread (standard deviation over images and locations) of a layer over
    the real images ``real_idx``: at most :data:`MAX_REAL_FOR_SPREAD` of them, drawn from ``rng``
    when there are more. ``centre_features``: of the features minus each image's per-channel median
    (:func:`centre`). Dead channels (no spread) get the layer's median spread.

    Returns ``(mean, std)``, float32 ``(C,)`` each.
    """
    idx = real_idx
    if idx.size > MAX_REAL_FOR_SPREAD:
        idx = np.sort(rng.choice(idx, MAX_REAL_FOR_SPREAD, replace=False))
    s1 = s2 = None
    n = 0
    for chunk in np.array_split(idx, max(1, idx.size // 16)):
        if chunk.size == 0:
            continue
        f = read_features(tree, layer, chunk)
        f = (centre(f) if centre_features else f).astype(np.float64)
        s1 = f.sum(axis=(0, 2, 3)) if s1 is None else s1 + f.sum(axis=(0, 2, 3))
        s2 = (f ** 2).sum(axis=(0, 2, 3)) if s2 is None else s2 + (f ** 2).sum(axis=(0, 2, 3))
        n += f.shape[0] * f.shape[2] * f.shape[3]
    mean = s1 / n
    std = np.sqrt(np.clip(s2 / n - mean ** 2, 0, None))
    # dead channels (no spread among real images) would divide by zero: give them the median
    # spread of the layer, so any activity there still counts, on the scale of its neighbours
    live = std > 1e-6 * max(std.max(), 1e-12)
    floor = np.median(std[live]) if live.any() else 1.0
    std = np.where(live, std, floor)
    return mean.astype(np.float32), std.astype(np.float32)
