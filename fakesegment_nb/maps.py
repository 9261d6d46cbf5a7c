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
      weights per model (:func:`paired_components`). efficientnet_lite0 (ImageNet weights):
      SSIM 1, squared difference 0.5 -- with trained features the squared difference localises
      as well as SSIM does (p3: AUROC 0.991 against 0.977) and the two together do better than
      either (see :data:`LAYER_WEIGHTS`). Default (ssd300_vgg16 random:0, the regression guard):
      SSIM 1, squared difference 0 -- on the seed-0 tuning probe, giving it weight 0.1 lowered
      pixel AUROC 0.937 -> 0.931 and AP 0.680 -> 0.587 with random weights, so it is computed
      only where SSIM cannot be (maps under 7x7 cells).

``reference`` (:func:`reference_maps`, unpaired), one of two distances per model
(:data:`REFERENCE_DISTANCE`), optionally on features centred per image and channel first
(:data:`REFERENCE_CENTRE`, :func:`_centre`: an image-wide change is not a local detail):

    * ``gaussian`` (default; ssd300_vgg16): per layer, a Gaussian fitted to the real images'
      feature vectors (all locations), its covariance shrunk towards a multiple of the identity
      (:data:`SHRINKAGE`); a location's score is its squared Mahalanobis distance per channel.
      (A memory bank did worse with random weights: pixel AUROC 0.41-0.52 per layer.)
    * ``memory_bank`` (efficientnet_lite0): PatchCore's (Roth et al. 2022). The weighted layers'
      features, standardised per channel by the real spread, are averaged over 3x3 neighbouring
      cells, resized to one grid (p3's 40x40) and concatenated; a location's score is the squared
      distance to the nearest patch of a memory bank of real patches: at most
      ``max_candidates`` of them are kept (an equal random share per image), and greedy coreset
      subsampling on a random projection picks ``min(max_size, ratio x patches seen)`` rows, so
      the bank's memory is bounded whatever the number of real images (:data:`MEMORY_BANK`,
      benchmarks/bench_reference_memory.py). On the seed-0 tuning probe (pixel AUROC / AP):
      memory bank on p3 + p4, centred, 0.848 / 0.395; the shrunk Gaussian on the same layers
      0.790 / 0.320, centred 0.824 / 0.361 (per layer, uncentred: p2 0.600, p3 0.773, p4 0.734,
      p5 0.770); the bank uncentred 0.776; 1024 rows 0.848 (0.841-0.855 over seeds 0-3: the
      coreset depends on the candidates drawn), 512 0.853, 256 0.854 (0.814 from all 40,000
      candidates), 4096 of 65,536 candidates (PatchCore's 10%) 0.834-0.838; pooling 1x1 0.804,
      5x5 0.827; adding p2 0.840, p5 0.797.

    Either way the score is divided by the median over real locations (1 = typical of a real
    image). Cross-fitted: real images are split into two folds, each real image is scored by the
    other fold's model, each synthetic image by the model of the fold that does not hold its own
    paired real image -- the method never sees a synthetic image's twin.

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
``layer_<name>``  (image, ``y_<name>``, ``x_<name>``) float32 weighted layer maps (memory bank:
               each layer's share of the squared distance, on the bank's grid);
``bank``, ``bank_scale``  (memory bank only) (fold, bank_patch, bank_feature) float32 the fitted
               banks (NaN rows pad the smaller) and (fold, bank_feature) the feature scales;
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

# Layer weights of the fusion, per method and model (layers absent weigh 0).
#
# efficientnet_lite0 (ImageNet weights), chosen on the seed-0 probe with the tuning artifact kinds
# only (benchmarks/bench_maps.py reports seed 1 and the held-out kinds). Paired, pixel AUROC /
# AP per layer with 1 - SSIM alone: p2 0.981 / 0.879, p3 0.977 / 0.844, p4 0.975 / 0.793,
# p5 0.856 / 0.339; with the squared difference alone: p2 0.972 / 0.805, p3 0.991 / 0.869,
# p4 0.985 / 0.821, p5 0.940 / 0.628. Over a grid of layer weights {0, 0.5, 1} and component
# mixes, fusing p2 + p3 + p4 with SSIM 1 and squared difference 0.5 reaches 0.994 / 0.891 (the
# best grid point, 0.9942, differs by less than 0.001); adding p5 (10x10 cells) only blurs it.
#
# ssd300_vgg16, measured with the seeded random weights CI uses and kept as a regression guard:
# conv4_3 (stride 8) is the layer that localises paired discrepancies (per-layer pixel AUROC on
# the seed-0 tuning probe: conv4_3 0.93, fc7 0.64, conv8_2 0.68, conv9_2 0.63); coarser maps
# (5x5 cells and less on a 300 px input) cannot localise a detail. For the unpaired reference
# distance conv4_3 ranks the *whole* too-clean render as further from real than its local
# details (AUROC 0.41), while fc7 and conv8_2 see the details (0.59, 0.64).
LAYER_WEIGHTS: dict[str, dict[str, dict[str, float]]] = {
    "paired": {
        "ssd300_vgg16": {"conv4_3": 1.0},
        "ssdlite320_mobilenet_v3_large": {"c4_expand": 1.0, "c5": 0.5},
        "efficientnet_lite0": {"p2": 1.0, "p3": 1.0, "p4": 1.0},
    },
    "reference": {
        "ssd300_vgg16": {"fc7": 1.0, "conv8_2": 1.0},
        "ssdlite320_mobilenet_v3_large": {"c5": 1.0, "extra1": 1.0},
        "efficientnet_lite0": {"p3": 1.0, "p4": 1.0},
    },
}
# Per-layer components of the paired map and their weights, per model (others: the default).
PAIRED_COMPONENTS = {"ssim": 1.0, "sq": 0.0}
PAIRED_COMPONENTS_BY_MODEL: dict[str, dict[str, float]] = {
    "efficientnet_lite0": {"ssim": 1.0, "sq": 0.5},
}
SSIM_SIGMA = 1.0
# The unpaired reference distance per model (others: "gaussian"), and the memory bank's settings
REFERENCE_DISTANCE: dict[str, str] = {"efficientnet_lite0": "memory_bank"}
# ... and whether features are first centred per image and channel (:func:`_centre`; others: no)
REFERENCE_CENTRE: dict[str, bool] = {"efficientnet_lite0": True}
MEMORY_BANK = {"grid": None, "pool": 3, "ratio": 0.1, "max_size": 1024, "max_candidates": 16384,
               "projection": 128}
MEMORY_BANK_BY_MODEL: dict[str, dict] = {"efficientnet_lite0": {"grid": "p3"}}
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


def paired_components(store) -> dict[str, float]:
    """The paired map's component weights for the store's model (:data:`PAIRED_COMPONENTS_BY_MODEL`,
    else :data:`PAIRED_COMPONENTS`)."""
    model = str(_tree(store).attrs.get("model", ""))
    return dict(PAIRED_COMPONENTS_BY_MODEL.get(model, PAIRED_COMPONENTS))


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


def _centre(f: np.ndarray) -> np.ndarray:
    """``(B, C, h, w)`` features minus each image's per-channel median over locations: an
    image-wide change of a channel (exposure, white balance, missing grain) is not a local detail."""
    return f - np.median(f.reshape(*f.shape[:2], -1), axis=2)[:, :, None, None]


def _real_stats(tree, layer: str, real_idx: np.ndarray, rng: np.random.Generator, centre: bool = False):
    """Per-channel mean and spread of a layer over the real images (up to 256 of them)."""
    idx = real_idx
    if idx.size > MAX_REAL_FOR_SPREAD:
        idx = np.sort(rng.choice(idx, MAX_REAL_FOR_SPREAD, replace=False))
    s1 = s2 = None
    n = 0
    for chunk in np.array_split(idx, max(1, idx.size // 16)):
        if chunk.size == 0:
            continue
        f = _features(tree, layer, chunk)
        f = (_centre(f) if centre else f).astype(np.float64)
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
    components : weights of the per-layer components, default the model's
        (:func:`paired_components`; ``"ssim"``: 1 - local SSIM, ``"sq"``: squared difference).

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
    comp_w = dict(paired_components(tree) if components is None else components)
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


def _gaussian(tree, layer: str, idx: np.ndarray, shrinkage: float, batch_size: int, centre: bool = False):
    """Mean and shrunk precision matrix of a layer's real feature vectors (float64); ``centre``:
    of the features minus each image's per-channel median (:func:`_centre`)."""
    c = tree["layers"][layer]["features"].shape[1]
    s1 = np.zeros(c)
    s2 = np.zeros((c, c))
    n = 0
    for b in _batches(idx.size, batch_size):
        v = _features(tree, layer, idx[b])
        v = (_centre(v) if centre else v).transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
        s1 += v.sum(0)
        s2 += v.T @ v
        n += v.shape[0]
    mean = s1 / n
    cov = (s2 - n * np.outer(mean, mean)) / max(n - 1, 1)
    target = np.trace(cov) / c
    shrunk = (1 - shrinkage) * cov + shrinkage * max(target, 1e-12) * np.eye(c)
    return mean, np.linalg.inv(shrunk)


# the PatchCore-style memory bank (Roth et al., "Towards Total Recall in Industrial Anomaly
# Detection", CVPR 2022): locally aware patch features, a greedy coreset, nearest-neighbour distance


def neighbourhood_patches(feats: dict[str, torch.Tensor], grid: tuple[int, int], pool: int) -> torch.Tensor:
    """Locally aware patch features (PatchCore, section 3.1): each layer's ``(B, C_l, h_l, w_l)``
    map is averaged over a ``pool`` x ``pool`` neighbourhood of cells (stride 1, borders averaged
    over the cells that exist), resized to ``grid`` (bilinear upwards, area average downwards) and
    the layers are concatenated along channels in the order of ``feats``: ``(B, sum C_l, *grid)``.
    """
    out = []
    for f in feats.values():
        if pool > 1:
            f = F.avg_pool2d(f, pool, stride=1, padding=pool // 2, count_include_pad=False)
        if tuple(f.shape[-2:]) != tuple(grid):
            up = f.shape[-2] < grid[0]
            f = (F.interpolate(f, size=grid, mode="bilinear", align_corners=False) if up
                 else F.adaptive_avg_pool2d(f, grid))
        out.append(f)
    return torch.cat(out, dim=1)


def greedy_coreset(x: torch.Tensor, size: int, *, projection: int = 128, seed: int = 0) -> np.ndarray:
    """Indices of ``size`` rows of ``x`` ``(N, D)`` chosen by greedy k-center selection, PatchCore's
    coreset subsampling (Algorithm 1; Sener & Savarese 2018): repeatedly add the row farthest from
    the rows chosen so far, so every row lies close to a chosen one. Distances are computed after a
    seeded Gaussian random projection to ``projection`` dimensions (Johnson-Lindenstrauss, as
    PatchCore does) when ``D`` is larger. Deterministic for a ``seed``; all rows when ``size >= N``.
    """
    n, d = x.shape
    if size >= n:
        return np.arange(n)
    if size < 1:
        raise FakesegmentError(f"the coreset size must be at least 1, got {size}")
    g = torch.Generator().manual_seed(int(seed))
    z = x.float()
    if projection and d > projection:
        z = z @ (torch.randn(d, projection, generator=g) / projection ** 0.5)
    chosen = np.empty(size, np.int64)
    chosen[0] = int(torch.randint(n, (1,), generator=g))
    sq = (z * z).sum(1)
    mind = (sq - 2 * (z @ z[chosen[0]]) + sq[chosen[0]]).clamp_min_(0)
    for i in range(1, size):
        j = int(torch.argmax(mind))
        chosen[i] = j
        torch.minimum(mind, (sq - 2 * (z @ z[j]) + sq[j]).clamp_min_(0), out=mind)
    return chosen


def nearest_patches(queries: torch.Tensor, bank: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """Index of the nearest (Euclidean) bank row ``(M, D)`` of every query row ``(N, D)``,
    computed in blocks of ``block`` queries (``|q|^2 - 2 q.b + |b|^2``)."""
    bsq = (bank * bank).sum(1)
    out = torch.empty(queries.shape[0], dtype=torch.long)
    for s in range(0, queries.shape[0], block):
        q = queries[s:s + block]
        out[s:s + block] = torch.argmin(bsq[None, :] - 2 * (q @ bank.T), dim=1)
    return out


@dataclass
class MemoryBank:
    """A fitted memory bank of real patch features (one cross-fitting fold).

    Attributes
    ----------
    bank : ``(M, D)`` float32 scaled patch features (``M`` at most ``max_size``).
    scale : ``(D,)`` float32: the factor each feature was multiplied by, ``sqrt(w_l / sum w /
        C_l) / sigma_c`` (``sigma_c`` the fold's real spread of channel ``c``), so a squared
        distance is the weighted mean over layers of the mean squared standardised difference.
    slices : ``{layer: (start, stop)}`` columns of each layer.
    patches_seen, candidates : real patches read, and kept for the coreset selection.
    """

    bank: np.ndarray
    scale: np.ndarray
    slices: dict[str, tuple[int, int]]
    patches_seen: int
    candidates: int

    def nbytes(self) -> int:
        return int(self.bank.nbytes + self.scale.nbytes)


def _bank_patches(tree, layers, idx, scale_t, grid, pool, centre) -> torch.Tensor:
    """Scaled locally aware patches of images ``idx``: ``(len(idx), D, *grid)``."""
    feats = {l: torch.from_numpy(_centre(f) if centre else f) for l in layers
             for f in [_features(tree, l, idx)]}
    return neighbourhood_patches(feats, grid, pool) * scale_t[None, :, None, None]


def fit_memory_bank(tree, layers: list[str], idx: np.ndarray, w: dict[str, float], grid: tuple[int, int],
                    pool: int = 3, ratio: float = 0.1, max_size: int = 1024, max_candidates: int = 16384,
                    projection: int = 128, centre: bool = True, seed: int = 0,
                    batch_size: int = 16) -> MemoryBank:
    """Fit a :class:`MemoryBank` on the real images ``idx``, bounded in memory.

    Each image gives ``max_candidates // len(idx)`` of its patches (at least one; a seeded random
    choice), so the candidates never exceed ``max_candidates`` rows whatever the number of
    images; the bank is their greedy coreset (:func:`greedy_coreset`) of
    ``min(max_size, ceil(ratio x patches seen))`` rows. ``centre``: features minus each image's
    per-channel median (:func:`_centre`), before the spread and the patches.
    """
    total = sum(w[l] for l in layers)
    scales, slices, start = [], {}, 0
    for l in layers:
        _, std = _real_stats(tree, l, idx, np.random.default_rng(seed), centre=centre)
        scales.append(np.sqrt(w[l] / total / std.size) / std)
        slices[l] = (start, start + std.size)
        start += std.size
    scale = np.concatenate(scales).astype(np.float32)
    scale_t = torch.from_numpy(scale)
    rng = np.random.default_rng(seed)
    cells = grid[0] * grid[1]
    per_image = max(1, min(cells, max_candidates // max(idx.size, 1)))
    cand = []
    for b in _batches(idx.size, batch_size):
        p = _bank_patches(tree, layers, idx[b], scale_t, grid, pool, centre)
        p = p.permute(0, 2, 3, 1).reshape(p.shape[0], cells, -1)
        for row in p:
            keep = np.sort(rng.choice(cells, per_image, replace=False)) if per_image < cells else slice(None)
            cand.append(row[keep])
    cand = torch.cat(cand)
    if cand.shape[0] > max_candidates:  # more images than max_candidates: one patch of some of them
        cand = cand[np.sort(rng.choice(cand.shape[0], max_candidates, replace=False))]
    seen = idx.size * cells
    size = int(min(max_size, np.ceil(ratio * seen), cand.shape[0]))
    chosen = greedy_coreset(cand, size, projection=projection, seed=seed)
    return MemoryBank(cand[chosen].numpy().copy(), scale, slices, int(seen), int(cand.shape[0]))


def _memory_bank_layer_maps(tree, layers, w, fold, model_of, targets, batch_size, bank_params):
    """Per-layer squared-distance maps (on the bank's grid) of ``targets``, each scored against the
    bank of the fold ``model_of`` names; plus the two banks."""
    grid_layer = bank_params["grid"]
    grid = tuple(tree["layers"][grid_layer]["features"].shape[2:])
    dom_real = np.flatnonzero(fold >= 0)
    out = {l: np.zeros((targets.size, *grid), np.float32) for l in layers}
    banks = []
    fit = {k: v for k, v in bank_params.items() if k != "grid"}
    for k in (0, 1):
        mb = fit_memory_bank(tree, layers, dom_real[fold[dom_real] == k], w, grid, batch_size=batch_size, **fit)
        banks.append(mb)
        bank_t = torch.from_numpy(mb.bank)
        scale_t = torch.from_numpy(mb.scale)
        sel = np.flatnonzero(model_of[targets] == k)
        for b in _batches(sel.size, batch_size):
            rows = sel[b]
            q = _bank_patches(tree, layers, targets[rows], scale_t, grid, fit["pool"], fit["centre"])
            q = q.permute(0, 2, 3, 1).reshape(-1, q.shape[1])
            diff = (q - bank_t[nearest_patches(q, bank_t)]) ** 2
            for l, (a, z) in mb.slices.items():
                # the layer's share of the squared distance, undone from its fusion weight
                d = diff[:, a:z].sum(1) * (sum(w[x] for x in layers) / w[l])
                out[l][rows] = d.reshape(rows.size, *grid).numpy()
    return out, banks


def reference_maps(store, weights: dict[str, float] | None = None, fpr: float = DEFAULT_FPR,
                   shrinkage: float = SHRINKAGE, seed: int = 0, batch_size: int = 16,
                   distance: str | None = None, bank: dict | None = None, centre: bool | None = None) -> Maps:
    """Compute the unpaired ``reference`` maps of every synthetic and real image.

    Two distances to the real images (``distance``; default the model's,
    :data:`REFERENCE_DISTANCE`):

    ``"gaussian"``: per layer, a Gaussian fitted to the real images' feature vectors (all
    locations) with its covariance shrunk towards a multiple of the identity,
    ``(1 - a) S + a tr(S)/C I``; a location's score is its squared Mahalanobis distance divided
    by the number of channels, then by the median over real locations (1 = typical for a real
    image).

    ``"memory_bank"``: PatchCore's (Roth et al. 2022): the weighted layers' features, each
    standardised by the real spread per channel and averaged over a neighbourhood of cells, are
    resized to one grid and concatenated (:func:`neighbourhood_patches`); a location's score is
    the squared distance to its nearest patch in a memory bank of real patches, reduced by greedy
    coreset subsampling and capped (:func:`fit_memory_bank`), divided by the median over real
    locations. The squared distance is a sum over layers, stored as the ``layer_<name>`` maps
    (on the grid).

    Cross-fitting: the real images are split into two folds; each real image is scored by the
    other fold's model (these are the scores the threshold is calibrated on), and each
    synthetic image by the model of the fold that does not hold its paired real image (if
    it has one), so the method never sees a synthetic image's own twin.

    Parameters
    ----------
    store : path/URL of a feature store or an open DataTree.
    weights : per-layer fusion weights overriding :data:`LAYER_WEIGHTS`.
    fpr : false-positive rate on the real images' cross-fitted scores for the mask threshold.
    shrinkage : ``a`` above, in [0, 1] (``"gaussian"``).
    seed : seed for the fold of synthetic images without a partner, and of the memory bank's
        candidates and coreset.
    batch_size : images read at once.
    distance : ``"gaussian"`` or ``"memory_bank"``.
    bank : memory-bank settings overriding :data:`MEMORY_BANK` and the model's
        :data:`MEMORY_BANK_BY_MODEL` (``grid``, ``pool``, ``ratio``, ``max_size``,
        ``max_candidates``, ``projection``).
    centre : subtract each image's per-channel median from its features first (default the
        model's, :data:`REFERENCE_CENTRE`).

    Returns
    -------
    Maps with a score for every image (real images: their cross-fitted score), not yet written.

    Raises
    ------
    FakesegmentError
        Fewer than two real images (nothing to compare with after cross-fitting), or a bad
        ``shrinkage``, ``distance`` or ``bank`` setting.
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
    model = str(tree.attrs.get("model", ""))
    distance = distance or REFERENCE_DISTANCE.get(model, "gaussian")
    centre = REFERENCE_CENTRE.get(model, False) if centre is None else bool(centre)
    if distance not in ("gaussian", "memory_bank"):
        raise FakesegmentError(f"unknown distance {distance!r}; choose 'gaussian' or 'memory_bank'")
    syn_idx = np.flatnonzero(dom == "synthetic")
    size = _input_size(tree)
    w = layer_weights(tree, weights, method="reference")
    layers = [l for l in layer_names(tree) if w[l] > 0]
    fold, model_of = _fold_models(table, seed)
    targets = np.concatenate([syn_idx, real_idx])
    real_rows = np.arange(syn_idx.size, targets.size)
    extra = {}
    if distance == "gaussian":
        layer_maps = _gaussian_layer_maps(tree, layers, real_idx, fold, model_of, targets, shrinkage, batch_size,
                                          centre)
        params = {"distance": "squared Mahalanobis / channels, shrunk covariance", "shrinkage": shrinkage}
    else:
        bp = memory_bank_params(tree, layers, bank)
        layer_maps, banks = _memory_bank_layer_maps(tree, layers, w, fold, model_of, targets, batch_size,
                                                    {**bp, "seed": seed, "centre": centre})
        params = {"distance": "memory_bank", "bank": bp, "bank_sizes": [b.bank.shape[0] for b in banks],
                  "patches_seen": [b.patches_seen for b in banks], "candidates": [b.candidates for b in banks],
                  "slices": banks[0].slices}
        extra = {"bank": (("fold", "bank_patch", "bank_feature"), _stack_banks([b.bank for b in banks])),
                 "bank_scale": (("fold", "bank_feature"), np.stack([b.scale for b in banks]))}
    # 1 = typical of a real location: every layer map divided by the median over real locations of
    # the layer's (gaussian) or of the total (memory_bank: the layers share one nearest neighbour)
    layer_scales = {}
    if distance == "gaussian":
        for layer in layers:
            layer_scales[layer] = float(np.median(layer_maps[layer][real_rows])) or 1.0
    else:
        total = sum(w[l] for l in layers)
        joint = sum(layer_maps[l][real_rows] * (w[l] / total) for l in layers)
        layer_scales = dict.fromkeys(layers, float(np.median(joint)) or 1.0)
    layer_maps = {l: m / layer_scales[l] for l, m in layer_maps.items()}
    fused = _fuse(layer_maps, w, size)
    threshold = calibrate(fused[real_rows], fpr)
    ds = _dataset(tree, "reference", targets, fused, layer_maps, w, size, threshold, fpr,
                  calibration="real images scored by the model of the other fold "
                              "(cross-fitted); threshold = 1 - fpr quantile of their scores",
                  params={**params, "centre": centre, "folds": 2, "seed": seed, "layer_scales": layer_scales},
                  n_img=len(table), extra=extra)
    return Maps("reference", ds, time.perf_counter() - t0)


def _stack_banks(banks: list[np.ndarray]) -> np.ndarray:
    """Two folds' banks in one array, the smaller padded with NaN rows."""
    m = max(b.shape[0] for b in banks)
    out = np.full((len(banks), m, banks[0].shape[1]), np.nan, np.float32)
    for k, b in enumerate(banks):
        out[k, :b.shape[0]] = b
    return out


def memory_bank_params(store, layers: list[str], bank: dict | None = None) -> dict:
    """The memory-bank settings for the store's model (:data:`MEMORY_BANK`, the model's
    :data:`MEMORY_BANK_BY_MODEL`, then ``bank``), checked."""
    tree = _tree(store)
    out = {**MEMORY_BANK, **MEMORY_BANK_BY_MODEL.get(str(tree.attrs.get("model", "")), {}), **(bank or {})}
    unknown = set(out) - set(MEMORY_BANK)
    if unknown:
        raise FakesegmentError(f"unknown memory-bank setting {', '.join(sorted(unknown))}; "
                               f"choose from {', '.join(MEMORY_BANK)}")
    if out["grid"] is None:  # the finest weighted layer
        out["grid"] = max(layers, key=lambda l: tree["layers"][l]["features"].shape[2])
    if out["grid"] not in layer_names(tree):
        raise FakesegmentError(f"bank grid {out['grid']!r} is not a layer of the store")
    if not 0 < out["ratio"] <= 1 or out["max_size"] < 1 or out["max_candidates"] < 1 or out["pool"] < 1:
        raise FakesegmentError("bank ratio must be in (0, 1]; max_size, max_candidates and pool at least 1")
    return out


def _gaussian_layer_maps(tree, layers, real_idx, fold, model_of, targets, shrinkage, batch_size, centre):
    """Per-layer squared Mahalanobis distance / channels of ``targets`` (cross-fitted)."""
    layer_maps = {}
    for layer in layers:
        c, h, wd = tree["layers"][layer]["features"].shape[1:]
        out = np.zeros((targets.size, h, wd), np.float32)
        for k in (0, 1):
            mean, prec = _gaussian(tree, layer, real_idx[fold[real_idx] == k], shrinkage, batch_size, centre)
            prec_t = torch.from_numpy(prec.astype(np.float32))
            mean_t = torch.from_numpy(mean.astype(np.float32))
            sel = np.flatnonzero(model_of[targets] == k)
            for b in _batches(sel.size, batch_size):
                rows = sel[b]
                f = _features(tree, layer, targets[rows])
                v = torch.from_numpy(_centre(f) if centre else f).permute(0, 2, 3, 1).reshape(-1, c)
                v = v - mean_t
                d = ((v @ prec_t) * v).sum(1) / c
                out[rows] = d.reshape(rows.size, h, wd).numpy()
        layer_maps[layer] = out
    return layer_maps


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
             n_img, extra=None) -> xr.Dataset:
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
    data.update(extra or {})
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
