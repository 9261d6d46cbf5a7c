"""Unrealistic-detail maps ("FakeSegment" maps) from the feature store (DESIGN.md section 6).

Both methods are functions of the stored features only (no network, no image files).

``paired`` (:func:`paired_maps`)
    For each synthetic image with a real partner, per layer ``l`` and location ``x``:

    * features are divided per channel by the real images' spread ``sigma_c`` (standard
      deviation of channel ``c`` over the real images and locations; dead channels get the
      layer's median spread), ``Z = F / sigma``;
    * ``ssim_l(x) = 1 -`` local SSIM of ``Z_syn`` and ``Z_real`` (per-channel SSIM maps with a
      Gaussian window of :data:`SSIM_SIGMA` cells, averaged over channels;
      :func:`fakesegment_nb.ssim.local_ssim`), on maps of at least 7x7 cells;
    * ``sq_l(x) = mean_c D_c(x)^2`` with ``D = Z_syn - Z_real`` minus its per-channel median over
      locations (an image-wide change of a channel -- exposure drift, white balance, missing
      grain -- is not a *local* detail);
    * each component is divided by its median over all synthetic locations of the store
      (1 = a typical discrepancy of that layer) and the layer map is their weighted mean,
      weights :data:`PAIRED_COMPONENTS`: SSIM 1, squared difference 0 -- on the seed-0 tuning
      probe, giving it weight 0.1 lowered pixel AUROC 0.937 -> 0.931 and AP 0.680 -> 0.587
      (random weights), so it is computed only where SSIM cannot be (maps under 7x7 cells).

``reference`` (:func:`reference_maps`, unpaired)
    Per layer, a Gaussian fitted to the real images' feature vectors (all locations), its
    covariance shrunk towards a multiple of the identity (:data:`SHRINKAGE`); a location's score
    is its squared Mahalanobis distance per channel, divided by the median over real locations
    (1 = typical of a real image). Cross-fitted: real images are split into two folds, each real
    image is scored by the other fold's Gaussian, each synthetic image by the Gaussian of the fold
    that does not hold its own paired real image -- the method never sees a synthetic image's twin.
    (A PatchCore-style nearest-neighbour distance to a memory bank was measured too and did worse
    with random weights: pixel AUROC 0.41-0.52 per layer on the seed-0 probe.)

Fusion (both methods): every layer map is upsampled bilinearly to the network input size
(root attribute ``input_size``, ``align_corners=False`` as torchvision resizes) and the fused
``score`` is the weighted mean of the layer maps, weights :data:`LAYER_WEIGHTS` per method and
model (layers missing there weigh 0; unknown models weigh every layer 1; override with
``weights=``). The weighted layer maps at their own resolution are stored as ``layer_<name>``
variables: their upsampled sum is ``score``, which makes the attribution of a region to layers
exact (:mod:`fakesegment_nb.segments`).

Masks, calibrated at a false-positive rate ``fpr`` (default :data:`DEFAULT_FPR`) on real images:

* ``reference``: one threshold, the ``1 - fpr`` quantile of the real images' cross-fitted scores.
* ``paired``: a real image has no paired score of its own (its discrepancy to itself is 0), so
  the null is built from real images: each of up to :data:`MAX_NULL_IMAGES` real images is
  paired with itself moved by one input pixel (``1/stride`` of a cell per layer, linear
  interpolation; along y for half of them, along x for the others) and scored with the same
  statistic. Every map is
  standardised by its own median and MAD (the renderer's global look sets each pair's
  background level); ``z*`` is the ``1 - fpr`` quantile of the standardised null maps, and an
  image's threshold is ``median + z* x MAD`` of its own score map.

Store layout written by :func:`write_maps` (``/maps/<method>``, no ``image`` coordinate of its
own: it inherits the root's):

``score``      (image, y, x) float32 at input resolution, NaN where the method does not apply
               (``paired``: real images and unpaired synthetic images);
``mask``       (image, y, x) bool, ``score > threshold``;
``threshold``  (image,) float64, the mask threshold of each image (NaN where not scored);
``layer_<name>``  (image, ``y_<name>``, ``x_<name>``) float32 weighted layer maps;
attributes ``method``, ``layers``, ``layer_weights`` (JSON), ``fpr``, ``calibration`` (text),
``params`` (JSON: components, scales, ``z_star``, ...), ``input_size``, ``fakesegment_nb``.
Regions are not stored: :func:`fakesegment_nb.segments.find_regions` derives them from ``mask``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr

from .errors import FakesegmentError
from .store import image_table, layer_names, open_store

METHODS = ("paired", "reference")

# Layer weights of the fusion, per method and model (layers absent weigh 0). With the seeded
# random weights CI uses, conv4_3 (stride 8) is the layer that localises paired discrepancies
# (per-layer pixel AUROC on the seed-0 tuning probe: conv4_3 0.93, fc7 0.64, conv8_2 0.68,
# conv9_2 0.63); coarser maps (5x5 cells and less on a 300 px input) cannot localise a detail.
# For the unpaired reference distance conv4_3 ranks the *whole* too-clean render as further
# from real than its local details (AUROC 0.41), while fc7 and conv8_2 see the details
# (0.59, 0.64). Chosen on the seed-0 probe with the tuning artifact kinds only;
# benchmarks/bench_maps.py reports seed 1 and the held-out kinds.
LAYER_WEIGHTS: dict[str, dict[str, dict[str, float]]] = {
    "paired": {
        "ssd300_vgg16": {"conv4_3": 1.0},
        "ssdlite320_mobilenet_v3_large": {"c4_expand": 1.0, "c5": 0.5},
    },
    "reference": {
        "ssd300_vgg16": {"fc7": 1.0, "conv8_2": 1.0},
        "ssdlite320_mobilenet_v3_large": {"c5": 1.0, "extra1": 1.0},
    },
}
# per-layer components of the paired map and their weights
PAIRED_COMPONENTS = {"ssim": 1.0, "sq": 0.0}
SSIM_SIGMA = 1.0
DEFAULT_FPR = 0.05
SHRINKAGE = 0.1
SSIM_MIN_CELLS = 7
MAX_REAL_FOR_SPREAD = 256
MAX_NULL_IMAGES = 32


@dataclass
class Maps:
    """A method's maps before (or after) they are written.

    Attributes
    ----------
    method : "paired" or "reference".
    dataset : the ``/maps/<method>`` dataset (see the module docstring), with the root's
        ``image`` coordinate attached.
    seconds : wall time of the computation.
    """

    method: str
    dataset: xr.Dataset
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# helpers


def _tree(store):
    return store if isinstance(store, xr.DataTree) else open_store(store, chunks=None)


def _input_size(tree) -> tuple[int, int]:
    size = tree.attrs.get("input_size")
    if not size:
        raise FakesegmentError("the store has no input_size attribute; re-extract it")
    size = list(size)
    return (int(size[0]), int(size[-1]))


def layer_weights(store, weights: dict[str, float] | None = None, method: str = "paired") -> dict[str, float]:
    """The fusion weight of every layer of ``store`` for ``method`` (explicit ``weights`` win).

    Models without an entry in :data:`LAYER_WEIGHTS` weigh every layer 1.
    """
    tree = _tree(store)
    names = layer_names(tree)
    table = LAYER_WEIGHTS[method].get(str(tree.attrs.get("model", "")))
    base = dict(table) if table is not None else {n: 1.0 for n in names}
    if weights:
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise FakesegmentError(f"no layer {', '.join(unknown)} in the store; it has {', '.join(names)}")
        base.update(weights)
    out = {n: float(base.get(n, 0.0)) for n in names}
    if not any(v > 0 for v in out.values()):
        raise FakesegmentError("every layer weight is 0; give at least one layer a positive weight")
    return out


def _features(tree, layer: str, idx: np.ndarray) -> np.ndarray:
    """float32 ``(len(idx), C, h, w)`` rows of a layer (non-finite values -> 0)."""
    var = tree["layers"][layer]["features"].variable
    idx = np.asarray(idx, dtype=int)
    if idx.size == 0:
        return np.zeros((0, *var.shape[1:]), np.float32)
    order = np.argsort(idx)
    arr = np.asarray(var[np.sort(idx)].values, dtype=np.float32)
    out = np.empty_like(arr)
    out[order] = arr
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _real_stats(tree, layer: str, real_idx: np.ndarray, rng: np.random.Generator):
    """Per-channel mean and spread of a layer over the real images (up to 256 of them)."""
    idx = real_idx
    if idx.size > MAX_REAL_FOR_SPREAD:
        idx = np.sort(rng.choice(idx, MAX_REAL_FOR_SPREAD, replace=False))
    s1 = s2 = None
    n = 0
    for chunk in np.array_split(idx, max(1, idx.size // 16)):
        if chunk.size == 0:
            continue
        f = _features(tree, layer, chunk).astype(np.float64)
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


def _upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(B, h, w)`` -> ``(B, H, W)`` bilinear (align_corners=False, as torchvision resizes)."""
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[:, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def _shift_cells(f: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move ``(..., h, w)`` maps by whole cells, repeating the border."""
    h, w = f.shape[-2:]
    yi = np.clip(np.arange(h) - dy, 0, h - 1)
    xi = np.clip(np.arange(w) - dx, 0, w - 1)
    return f[..., yi, :][..., :, xi]


def _pairs(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions of (synthetic image, its real partner) for every usable pair."""
    pos = {k: i for i, k in enumerate(table.index)}
    syn, real = [], []
    for i, (img, dom, pair) in enumerate(zip(table.index, table["domain"], table["pair"])):
        if dom == "synthetic" and pair and pair in pos and table["domain"].iloc[pos[pair]] == "real":
            syn.append(i)
            real.append(pos[pair])
    return np.asarray(syn, int), np.asarray(real, int)


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


# --------------------------------------------------------------------------------------------
# paired


def _paired_layer(zs: np.ndarray, zr: np.ndarray, with_ssim: bool) -> dict[str, np.ndarray]:
    """Raw components of one layer for a batch of normalised pairs ``(B, C, h, w)``."""
    from .ssim import local_ssim

    d = zs - zr
    d = d - np.median(d.reshape(*d.shape[:2], -1), axis=2)[:, :, None, None]
    out = {"sq": (d ** 2).mean(axis=1)}
    if with_ssim:
        s = local_ssim(torch.from_numpy(zs), torch.from_numpy(zr), data_range=None, sigma=SSIM_SIGMA)
        out["ssim"] = 1.0 - torch.nan_to_num(s, nan=1.0).numpy()
    return out


def _shift_fraction(f: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Move ``(..., h, w)`` maps by a fraction (0 <= t <= 1) of a cell along y or x:
    linear interpolation with the neighbouring cell, border repeated."""
    out = f
    if dy:
        out = (1 - dy) * out + dy * _shift_cells(out, 1, 0)
    if dx:
        out = (1 - dx) * out + dx * _shift_cells(out, 0, 1)
    return out.astype(np.float32, copy=False)


def _strides(tree, layers, size) -> dict[str, float]:
    return {l: size[0] / tree["layers"][l]["features"].shape[2] for l in layers}


def paired_maps(store, weights: dict[str, float] | None = None, fpr: float = DEFAULT_FPR,
                batch_size: int = 8, components: dict[str, float] | None = None) -> Maps:
    """Compute the ``paired`` maps of every synthetic image that has a real partner.

    Parameters
    ----------
    store : path/URL of a feature store or an open DataTree.
    weights : per-layer fusion weights overriding :data:`LAYER_WEIGHTS` (e.g. ``{"fc7": 0}``).
    fpr : false-positive rate at which the mask threshold is calibrated (see :func:`calibrate`).
    batch_size : pairs processed at once.
    components : weights of the per-layer components, default :data:`PAIRED_COMPONENTS`
        (``"ssim"``: 1 - local SSIM, ``"sq"``: squared difference).

    Returns
    -------
    Maps, not yet written (see :func:`write_maps`).

    Raises
    ------
    FakesegmentError
        The store holds no pair of a synthetic and a real image (use ``reference``).
    """
    t0 = time.perf_counter()
    tree = _tree(store)
    table = image_table(tree)
    syn, real = _pairs(table)
    if syn.size == 0:
        raise FakesegmentError("the store has no synthetic image paired with a real one, so the "
                               "'paired' method does not apply; use --method reference")
    comp_w = dict(PAIRED_COMPONENTS if components is None else components)
    size = _input_size(tree)
    w = layer_weights(tree, weights, method="paired")
    layers = [l for l in layer_names(tree) if w[l] > 0]
    strides = _strides(tree, layers, size)
    real_all = np.flatnonzero(table["domain"].to_numpy() == "real")
    rng = np.random.default_rng(0)
    null_idx = real_all if real_all.size <= MAX_NULL_IMAGES else np.sort(
        rng.choice(real_all, MAX_NULL_IMAGES, replace=False))
    layer_maps, null_maps, scales = {}, {}, {}
    for layer in layers:
        _, std = _real_stats(tree, layer, real_all, rng)
        inv = (1.0 / std)[None, :, None, None]
        shape = tree["layers"][layer]["features"].shape[2:]
        use = {k: v for k, v in comp_w.items() if v > 0 and (k != "ssim" or min(shape) >= SSIM_MIN_CELLS)}
        if not use:
            use = {"sq": 1.0}
        comp = {k: [] for k in use}
        ncomp = {k: [] for k in use}
        for b in _batches(syn.size, batch_size):
            zs = _features(tree, layer, syn[b]) * inv
            zr = _features(tree, layer, real[b]) * inv
            res = _paired_layer(zs, zr, "ssim" in use)
            for k in use:
                comp[k].append(res[k])
        # the real-image null: each real image against itself moved by one input pixel
        # (1/stride of a cell, linear interpolation), along y for every other batch, else x
        step = 1.0 / strides[layer]
        for j, b in enumerate(_batches(null_idx.size, batch_size)):
            zr = _features(tree, layer, null_idx[b]) * inv
            dy, dx = (step, 0.0) if j % 2 == 0 else (0.0, step)
            res = _paired_layer(_shift_fraction(zr, dy, dx), zr, "ssim" in use)
            for k in use:
                ncomp[k].append(res[k])
        parts, nparts = [], []
        total = sum(use.values())
        for k, cw in use.items():
            v = np.concatenate(comp[k])
            scale = float(np.median(v)) or 1.0
            scales[f"{layer}.{k}"] = scale
            parts.append(v * (cw / total / scale))
            nparts.append(np.concatenate(ncomp[k]) * (cw / total / scale))
        layer_maps[layer] = np.sum(parts, axis=0)
        null_maps[layer] = np.sum(nparts, axis=0)
    score_syn = _fuse(layer_maps, w, size)
    z_star = calibrate(robust_z(_fuse(null_maps, w, size)), fpr)
    med, mad = _robust_location(score_syn)
    thresholds = med + z_star * mad
    ds = _dataset(tree, "paired", syn, score_syn, layer_maps, w, size, thresholds, fpr,
                  calibration="per image: threshold = median + z* x MAD of the image's score; z* = "
                              "1 - fpr quantile of the same standardised score on real images paired "
                              "with themselves moved by one input pixel (1/stride of a cell per layer, "
                              "linear interpolation; along y or along x)",
                  params={"components": {k: v for k, v in comp_w.items()}, "component_scales": scales,
                          "ssim_sigma": SSIM_SIGMA, "drift_removal": "per-channel median of the difference",
                          "null_images": int(null_idx.size), "z_star": z_star},
                  n_img=len(table))
    return Maps("paired", ds, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# reference


def _folds(table: pd.DataFrame, real_idx: np.ndarray) -> np.ndarray:
    """Fold (0/1) of every image position: real images alternate in id order; others -1."""
    fold = np.full(len(table), -1, int)
    order = real_idx[np.argsort(table.index.to_numpy()[real_idx])]
    fold[order] = np.arange(order.size) % 2
    return fold


def _fold_models(table: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fold of each real image or -1, fold whose Gaussian scores each image).

    Real images are scored by the other fold; a synthetic image by the fold that does not hold
    its paired real image (a seeded coin for images without a real partner).
    """
    dom = table["domain"].to_numpy()
    real_idx = np.flatnonzero(dom == "real")
    fold = _folds(table, real_idx)
    pos = {k: i for i, k in enumerate(table.index)}
    rng = np.random.default_rng(seed)
    model_of = np.zeros(len(table), int)
    model_of[real_idx] = 1 - fold[real_idx]
    for i in np.flatnonzero(dom != "real"):
        p = pos.get(table["pair"].iloc[i], None)
        model_of[i] = 1 - fold[p] if p is not None and fold[p] >= 0 else int(rng.integers(2))
    return fold, model_of


def _gaussian(tree, layer: str, idx: np.ndarray, shrinkage: float, batch_size: int):
    """Mean and shrunk precision matrix of a layer's real feature vectors (float64)."""
    c = tree["layers"][layer]["features"].shape[1]
    s1 = np.zeros(c)
    s2 = np.zeros((c, c))
    n = 0
    for b in _batches(idx.size, batch_size):
        v = _features(tree, layer, idx[b]).transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
        s1 += v.sum(0)
        s2 += v.T @ v
        n += v.shape[0]
    mean = s1 / n
    cov = (s2 - n * np.outer(mean, mean)) / max(n - 1, 1)
    target = np.trace(cov) / c
    shrunk = (1 - shrinkage) * cov + shrinkage * max(target, 1e-12) * np.eye(c)
    return mean, np.linalg.inv(shrunk)


def reference_maps(store, weights: dict[str, float] | None = None, fpr: float = DEFAULT_FPR,
                   shrinkage: float = SHRINKAGE, seed: int = 0, batch_size: int = 16) -> Maps:
    """Compute the unpaired ``reference`` maps of every synthetic and real image.

    Per layer, a Gaussian is fitted to the real images' feature vectors (all locations) with
    its covariance shrunk towards a multiple of the identity, ``(1 - a) S + a tr(S)/C I``; a
    location's score is its squared Mahalanobis distance divided by the number of channels,
    then by the median over real locations (1 = typical for a real image).

    Cross-fitting: the real images are split into two folds; each real image is scored by the
    other fold's Gaussian (these are the scores the threshold is calibrated on), and each
    synthetic image by the Gaussian of the fold that does not hold its paired real image (if
    it has one), so the method never sees a synthetic image's own twin.

    Parameters
    ----------
    store : path/URL of a feature store or an open DataTree.
    weights : per-layer fusion weights overriding :data:`LAYER_WEIGHTS`.
    fpr : false-positive rate on the real images' cross-fitted scores for the mask threshold.
    shrinkage : ``a`` above, in [0, 1].
    seed : seed for the fold of synthetic images without a partner.
    batch_size : images read at once.

    Returns
    -------
    Maps with a score for every image (real images: their cross-fitted score), not yet written.

    Raises
    ------
    FakesegmentError
        Fewer than two real images (nothing to compare with after cross-fitting).
    """
    t0 = time.perf_counter()
    tree = _tree(store)
    table = image_table(tree)
    dom = table["domain"].to_numpy()
    real_idx = np.flatnonzero(dom == "real")
    if real_idx.size < 2:
        raise FakesegmentError("the reference method needs at least two real images in the store")
    if not 0 <= shrinkage <= 1:
        raise FakesegmentError(f"shrinkage must be in [0, 1], got {shrinkage}")
    syn_idx = np.flatnonzero(dom == "synthetic")
    size = _input_size(tree)
    w = layer_weights(tree, weights, method="reference")
    layers = [l for l in layer_names(tree) if w[l] > 0]
    fold, model_of = _fold_models(table, seed)
    targets = np.concatenate([syn_idx, real_idx])
    real_rows = np.arange(syn_idx.size, targets.size)
    layer_maps: dict[str, np.ndarray] = {}
    layer_scales: dict[str, float] = {}
    for layer in layers:
        c, h, wd = tree["layers"][layer]["features"].shape[1:]
        out = np.zeros((targets.size, h, wd), np.float32)
        for k in (0, 1):
            mean, prec = _gaussian(tree, layer, real_idx[fold[real_idx] == k], shrinkage, batch_size)
            prec_t = torch.from_numpy(prec.astype(np.float32))
            mean_t = torch.from_numpy(mean.astype(np.float32))
            sel = np.flatnonzero(model_of[targets] == k)
            for b in _batches(sel.size, batch_size):
                rows = sel[b]
                v = torch.from_numpy(_features(tree, layer, targets[rows])).permute(0, 2, 3, 1).reshape(-1, c)
                v = v - mean_t
                d = ((v @ prec_t) * v).sum(1) / c
                out[rows] = d.reshape(rows.size, h, wd).numpy()
        scale = float(np.median(out[real_rows])) or 1.0
        layer_scales[layer] = scale
        layer_maps[layer] = out / scale
    fused = _fuse(layer_maps, w, size)
    threshold = calibrate(fused[real_rows], fpr)
    ds = _dataset(tree, "reference", targets, fused, layer_maps, w, size, threshold, fpr,
                  calibration="real images scored by the Gaussian of the other fold "
                              "(cross-fitted); threshold = 1 - fpr quantile of their scores",
                  params={"distance": "squared Mahalanobis / channels, shrunk covariance",
                          "shrinkage": shrinkage, "folds": 2, "seed": seed, "layer_scales": layer_scales},
                  n_img=len(table))
    return Maps("reference", ds, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# fusion, calibration, dataset


def _fuse(layer_maps: dict[str, np.ndarray], w: dict[str, float], size: tuple[int, int]) -> np.ndarray:
    total = sum(w[l] for l in layer_maps)
    out = None
    for layer, m in layer_maps.items():
        up = _upsample(m, size) * (w[layer] / total)
        out = up if out is None else out + up
    return out


def _robust_location(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-map median and MAD (scaled to a standard deviation, 1.4826 x) of ``(B, H, W)``."""
    flat = maps.reshape(maps.shape[0], -1).astype(np.float64)
    med = np.nanmedian(flat, axis=1)
    mad = 1.4826 * np.nanmedian(np.abs(flat - med[:, None]), axis=1)
    floor = 1e-6 * np.maximum(np.abs(med), 1e-12)
    return med, np.maximum(mad, floor)


def robust_z(maps: np.ndarray) -> np.ndarray:
    """Each ``(H, W)`` map of ``(B, H, W)`` standardised by its own median and MAD."""
    med, mad = _robust_location(maps)
    return (maps - med[:, None, None]) / mad[:, None, None]


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
        raise FakesegmentError(f"the false-positive rate must be in (0, 1), got {fpr}")
    v = np.asarray(null_scores, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise FakesegmentError("no real image scores to calibrate the mask threshold on")
    return float(np.quantile(v, 1 - fpr))


def _dataset(tree, method, idx, scores, layer_maps, w, size, threshold, fpr, calibration, params,
             n_img) -> xr.Dataset:
    from . import __version__

    score = np.full((n_img, *size), np.nan, np.float32)
    score[idx] = scores
    thr = np.full(n_img, np.nan, np.float64)
    thr[idx] = threshold
    total = sum(w[l] for l in layer_maps)
    data = {"score": (("image", "y", "x"), score),
            "mask": (("image", "y", "x"), np.nan_to_num(score, nan=-np.inf) > np.nan_to_num(thr, nan=np.inf)[:, None, None]),
            "threshold": (("image",), thr)}
    for layer, m in layer_maps.items():
        full = np.full((n_img, *m.shape[1:]), np.nan, np.float32)
        full[idx] = m * (w[layer] / total)
        data[f"layer_{layer}"] = (("image", f"y_{layer}", f"x_{layer}"), full)
    attrs = {"method": method, "layers": list(layer_maps), "layer_weights": json.dumps(w),
             "fpr": float(fpr), "calibration": calibration,
             "params": json.dumps(params), "input_size": list(size), "fakesegment_nb": __version__}
    return xr.Dataset(data, coords={"image": tree["image"].values}, attrs=attrs)


def write_maps(store, maps: Maps) -> None:
    """Write ``maps`` to ``/maps/<method>`` of ``store`` (replacing earlier maps of that method).

    The root group is never written; the ``image`` coordinate is inherited from it.
    """
    path = store.encoding.get("source") if isinstance(store, xr.DataTree) else store
    if path is None:
        raise FakesegmentError("write_maps needs the store's path or URL, not an opened tree")
    ds = maps.dataset.drop_vars("image")
    encoding = {k: {"chunks": (1, *ds[k].shape[1:])} for k in ds.data_vars}
    ds.to_zarr(str(path), group=f"maps/{maps.method}", mode="w", consolidated=False, zarr_format=3,
               encoding=encoding)


def compute_maps(store, method: str = "all", write: bool = True, fpr: float = DEFAULT_FPR,
                 weights: dict[str, float] | None = None) -> dict[str, Maps]:
    """Compute (and by default write) the maps of one method or of ``"all"``.

    With ``"all"``, ``paired`` is skipped with a note when the store has no pairs. To write,
    pass the store's path or URL.

    Returns
    -------
    ``{method: Maps}``.
    """
    if method not in (*METHODS, "all"):
        raise FakesegmentError(f"unknown method {method!r}; choose paired, reference or all")
    tree = _tree(store)
    out: dict[str, Maps] = {}
    notes = []
    for m in (METHODS if method == "all" else (method,)):
        if m == "paired" and method == "all" and _pairs(image_table(tree))[0].size == 0:
            notes.append("no synthetic image has a real partner: paired maps skipped")
            continue
        res = (paired_maps if m == "paired" else reference_maps)(tree, weights=weights, fpr=fpr)
        res.notes.extend(notes)
        if write:
            write_maps(store, res)
        out[m] = res
    return out


def read_maps(store, method: str) -> xr.Dataset:
    """The stored ``/maps/<method>`` dataset (lazy), with the root's ``image`` coordinate.

    Raises
    ------
    FakesegmentError
        The store has no maps of that method (run ``fakesegment maps``).
    """
    tree = _tree(store)
    if "maps" not in tree.children or method not in tree["maps"].children:
        have = list(tree["maps"].children) if "maps" in tree.children else []
        raise FakesegmentError(f"the store has no {method} maps"
                               + (f" (it has {', '.join(have)})" if have else "")
                               + f"; run `fakesegment maps --store ... --method {method}` first")
    return tree["maps"][method].to_dataset()


def stored_methods(store) -> list[str]:
    """Methods whose maps the store holds."""
    tree = _tree(store)
    return list(tree["maps"].children) if "maps" in tree.children else []


def score_map(store, image: str, method: str = "paired") -> np.ndarray:
    """One image's fused score ``(H, W)`` at input resolution (NaN if the method skips it)."""
    ds = read_maps(store, method)
    try:
        return np.asarray(ds["score"].sel(image=image).values, np.float32)
    except KeyError:
        raise FakesegmentError(f"the store has no image {image!r}") from None
