"""The unpaired ``reference`` maps (:func:`reference_maps`): how far each location's features lie
from the real images' features of the same layer.

One of two distances per model (:data:`~fakesegment_nb.maps.settings.REFERENCE_DISTANCE`),
optionally on features centred per image and channel first
(:data:`~fakesegment_nb.maps.settings.REFERENCE_CENTRE`: an image-wide change is not a local detail):

* ``gaussian`` (default; ssd300_vgg16; :mod:`.gaussian`): per layer, a Gaussian fitted to the real
  images' feature vectors (all locations), its covariance shrunk towards a multiple of the
  identity (:data:`~fakesegment_nb.maps.settings.SHRINKAGE`); a location's score is its squared
  Mahalanobis distance per channel. (A memory bank did worse with random weights: pixel AUROC
  0.41-0.52 per layer.)
* ``memory_bank`` (efficientnet_lite0; :mod:`.memory_bank`): PatchCore's (Roth et al. 2022). The
  weighted layers' features, standardised per channel by the real spread, are averaged over 3x3
  neighbouring cells, resized to one grid (p3's 40x40) and concatenated; a location's score is the
  squared distance to the nearest patch of a memory bank of real patches: at most
  ``max_candidates`` of them are kept (an equal random share per image), and greedy coreset
  subsampling on a random projection picks ``min(max_size, ratio x patches seen)`` rows, so the
  bank's memory is bounded whatever the number of real images
  (:data:`~fakesegment_nb.maps.settings.MEMORY_BANK`, benchmarks/bench_reference_memory.py). On the
  seed-0 tuning probe (pixel AUROC / AP): memory bank on p3 + p4, centred, 0.848 / 0.395; the
  shrunk Gaussian on the same layers 0.790 / 0.320, centred 0.824 / 0.361 (per layer, uncentred:
  p2 0.600, p3 0.773, p4 0.734, p5 0.770); the bank uncentred 0.776; 1024 rows 0.848 (0.841-0.855
  over seeds 0-3: the coreset depends on the candidates drawn), 512 0.853, 256 0.854 (0.814 from
  all 40,000 candidates), 4096 of 65,536 candidates (PatchCore's 10%) 0.834-0.838; pooling 1x1
  0.804, 5x5 0.827; adding p2 0.840, p5 0.797.

Either way the score is divided by the median over real locations (1 = typical of a real image).

With the memory bank (``set_novelty``, efficientnet_lite0), the image's own synthetic set is a second
reference (:mod:`.set_novelty`): a synthetic image's score is ``R^(1 - a) S^a``, ``R`` the distance to
the real bank above and ``S`` the distance to the nearest patch of the set's other images (leave one
out, 1 = typical of the set), with ``a = clip(1 - c, 0, 1)`` and ``c`` the set's coherence -- the
median squared distance of its images to a coreset bank of the set's images of the other fold over
that to the real bank. A set whose renders are
no closer to one another than to the photos (domain-randomised renders; the probe's renders of
unrelated photos: ``c`` about 1) has no common look to discount and keeps ``R``; a coherent set (one
engine, one scene: ``c`` about 0.5) is scored against its own typical look as much as against the
photos, so its global look no longer counts as a detail. Real images keep ``R``.
Cross-fitted: real images are split into two folds by content (:func:`folds`: each real image's most
similar real image falls in the other fold), each real image is
scored by the other fold's model, each synthetic image by the model of the fold that does not
hold its own paired real image -- the method never sees a synthetic image's twin. The mask
threshold is the ``1 - fpr`` quantile of the real images' cross-fitted scores. Each fold's fitted
model (Gaussians or memory bank) is stored with the maps (:mod:`.group`).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import torch

from ..calibration import DEFAULT_FPR, calibrate_batches
from ..errors import FakesegmentError, ParameterError
from ..store import image_table, layer_names, partners
from .features import (as_tree, batches, centre as centre_features, content_descriptors, input_size, read_features,
                       set_of_images)
from .gaussian import Gaussian, fit_layer_gaussian, mahalanobis
from .group import Maps, build_dataset, fused_batches
from .memory_bank import bank_distances, bank_spread, fit_memory_bank, patch_rows, smooth_cells
from .set_novelty import (COHERENCE_IMAGES, fit_set_bank, geometric_shares, raw_distances, set_bank_folds, set_distances,
                          set_exponent, set_members, set_reference, smooth_all)
from .settings import REFERENCE_CENTRE, REFERENCE_DISTANCE, SHRINKAGE, layer_weights, memory_bank_params

__all__ = ["fold_models", "folds", "layer_gaussian", "leave_out", "location_median", "reference_maps", "similar_pairs"]


def similar_pairs(x: np.ndarray, neighbours: int = 10) -> np.ndarray:
    """Fold (0/1) of each row of ``x`` (one descriptor per real image, in id order) so that similar
    rows fall in different folds: every row is matched with its nearest unmatched row (greedily,
    closest pairs first, among each row's ``neighbours`` nearest), the two of a pair go to
    different folds (the one earlier in id order to fold 0), and rows left unmatched alternate in
    id order. Deterministic; memory ``O(n x neighbours)``."""
    n = x.shape[0]
    fold = np.full(n, -1, int)
    if n >= 2:
        from sklearn.neighbors import NearestNeighbors

        d, j = NearestNeighbors(n_neighbors=min(neighbours + 1, n)).fit(x).kneighbors(x)
        a = np.repeat(np.arange(n), j.shape[1] - 1)
        b, dist = j[:, 1:].ravel(), d[:, 1:].ravel()
        for e in np.lexsort((np.maximum(a, b), np.minimum(a, b), dist)):  # closest first, ties by index
            if a[e] != b[e] and fold[a[e]] < 0 and fold[b[e]] < 0:
                fold[min(a[e], b[e])], fold[max(a[e], b[e])] = 0, 1
    rest = np.flatnonzero(fold < 0)
    fold[rest] = np.arange(rest.size) % 2
    return fold


def folds(table: pd.DataFrame, real_idx: np.ndarray, tree=None) -> np.ndarray:
    """Fold (0/1) of every image position; others -1.

    With ``tree`` (how maps are computed): the real images are split by content,
    :func:`similar_pairs` of their :func:`~.features.content_descriptors`, so that each real image's
    most similar real image tends to sit in the other fold, whose model scores it (and its synthetic
    twin): each half of the real set stands for the whole. Without (maps written before the split was
    recorded as ``params["fold_split"]``): real images alternate in id order -- which puts every view
    of a subject in one fold whenever the views recur with an even period (the probe's 16 photos:
    all crops of a photo fell in one fold, so each image was judged against a half that had never
    seen its subject).
    """
    fold = np.full(len(table), -1, int)
    order = real_idx[np.argsort(table.index.to_numpy()[real_idx])]
    fold[order] = (similar_pairs(content_descriptors(tree, order)) if tree is not None
                   else np.arange(order.size) % 2)
    return fold


def fold_models(table: pd.DataFrame, seed: int = 0, balanced: bool = True,
                tree=None) -> tuple[np.ndarray, np.ndarray]:
    """(fold of each real image or -1, fold whose model scores each image).

    Real images are scored by the other fold; a synthetic image by the fold that does not hold
    its paired real image. Synthetic images without a real partner alternate between the folds in
    a seeded random order (``balanced``; maps written before the ``reference_fold`` variable was
    stored drew a seeded coin per image instead, ``balanced=False``), so that both halves of a set
    hold images (the set's own bank, :mod:`.set_novelty`). ``tree``: split the real images by
    content (:func:`folds`; maps record ``params["fold_split"] == "similar"``).
    """
    dom = table["domain"].to_numpy()
    real_idx = np.flatnonzero(dom == "real")
    fold = folds(table, real_idx, tree)
    found = partners(table)
    partner_of = dict(zip(found["i_syn"].tolist(), found["i_real"].tolist()))
    rng = np.random.default_rng(seed)
    model_of = np.zeros(len(table), int)
    model_of[real_idx] = 1 - fold[real_idx]
    alone = []
    for i in np.flatnonzero(dom != "real"):
        p = partner_of.get(int(i))
        if p is not None:
            model_of[i] = 1 - fold[p]
        elif balanced:
            alone.append(int(i))
        else:
            model_of[i] = int(rng.integers(2))
    if alone:  # alternate within each set, in a seeded random order
        alone = rng.permutation(np.array(alone))
        sets = set_of_images(table)[alone]
        for name in dict.fromkeys(sets):
            members = alone[sets == name]
            model_of[members] = np.arange(members.size) % 2
    return fold, model_of


def layer_gaussian(tree, ds, layer: str, k: int) -> Gaussian:
    """Fold ``k``'s Gaussian of ``layer`` behind stored ``reference`` maps ``ds``: the stored one,
    or refitted as the maps fitted it for maps written without it."""
    if f"precision_{layer}" in ds.data_vars:
        return Gaussian(np.asarray(ds[f"mean_{layer}"].values[k], np.float64),
                        np.asarray(ds[f"precision_{layer}"].values[k], np.float64))
    params = json.loads(ds.attrs["params"])
    table = image_table(tree)
    real_idx = np.flatnonzero(table["domain"].to_numpy() == "real")
    fold, _ = fold_models(table, int(params.get("seed", 0)),
                          tree=tree if params.get("fold_split") == "similar" else None)
    return fit_layer_gaussian(tree, layer, real_idx[fold[real_idx] == k], float(params.get("shrinkage", SHRINKAGE)),
                              16, bool(params.get("centre", False)))


def reference_maps(store, weights: dict[str, float] | None = None, fpr: float = DEFAULT_FPR,
                   shrinkage: float = SHRINKAGE, seed: int = 0, batch_size: int = 16,
                   distance: str | None = None, bank: dict | None = None, centre: bool | None = None) -> Maps:
    """Compute the unpaired ``reference`` maps of every synthetic and real image.

    Two distances to the real images (``distance``; default the model's, see the module docstring):

    ``"gaussian"``: per layer, a Gaussian fitted to the real images' feature vectors (all
    locations) with its covariance shrunk towards a multiple of the identity,
    ``(1 - a) S + a tr(S)/C I``; a location's score is its squared Mahalanobis distance divided
    by the number of channels, then by the median over real locations (1 = typical for a real
    image).

    ``"memory_bank"``: PatchCore's (Roth et al. 2022): the weighted layers' features, each
    standardised by the real spread per channel and averaged over a neighbourhood of cells, are
    resized to one grid and concatenated (:func:`~.memory_bank.neighbourhood_patches`); a
    location's score is the squared distance to its nearest patch in a memory bank of real
    patches, reduced by greedy coreset subsampling and capped (:func:`~.memory_bank.fit_memory_bank`),
    divided by the median over real locations. The squared distance is a sum over layers, stored
    as the ``layer_<name>`` maps (on the grid).

    Cross-fitting: the real images are split into two folds; each real image is scored by the
    other fold's model (these are the scores the threshold is calibrated on), and each
    synthetic image by the model of the fold that does not hold its paired real image (if
    it has one), so the method never sees a synthetic image's own twin.

    Parameters
    ----------
    store : path/URL of a feature store or an open DataTree.
    weights : per-layer fusion weights overriding the model's.
    fpr : false-positive rate on the real images' cross-fitted scores for the mask threshold.
    shrinkage : ``a`` above, in [0, 1] (``"gaussian"``).
    seed : seed for the fold of synthetic images without a partner, and of the memory bank's
        candidates and coreset.
    batch_size : images read at once.
    distance : ``"gaussian"`` or ``"memory_bank"``.
    bank : memory-bank settings overriding :data:`~fakesegment_nb.maps.settings.MEMORY_BANK` and
        the model's (``grid``, ``pool``, ``ratio``, ``max_size``, ``max_candidates``, ``projection``,
        and the steps on top: ``density``, ``location``, ``smooth``; see the settings module).
    centre : subtract each image's per-channel median from its features first (default the
        model's).

    Returns
    -------
    Maps with a score for every image (real images: their cross-fitted score), not yet written,
    with each fold's fitted model.

    Raises
    ------
    FakesegmentError
        Fewer than two real images (nothing to compare with after cross-fitting), or a bad
        ``shrinkage``, ``distance`` or ``bank`` setting.
    """
    t0 = time.perf_counter()
    tree = as_tree(store)
    table = image_table(tree)
    dom = table["domain"].to_numpy()
    real_idx = np.flatnonzero(dom == "real")
    if real_idx.size < 2:
        raise FakesegmentError("the reference method needs at least two real images in the store")
    if not 0 <= shrinkage <= 1:
        raise ParameterError("shrinkage", f"must be in [0, 1], got {shrinkage}")
    model = str(tree.attrs.get("model", ""))
    distance = distance or REFERENCE_DISTANCE.get(model, "gaussian")
    centre = REFERENCE_CENTRE.get(model, False) if centre is None else bool(centre)
    if distance not in ("gaussian", "memory_bank"):
        raise ParameterError("distance", f"{distance!r} is unknown; choose 'gaussian' or 'memory_bank'")
    syn_idx = np.flatnonzero(dom == "synthetic")
    size = input_size(tree)
    w = layer_weights(tree, weights, method="reference")
    layers = [l for l in layer_names(tree) if w[l] > 0]
    fold, model_of = fold_models(table, seed, tree=tree)
    targets = np.concatenate([syn_idx, real_idx])
    real_rows = np.arange(syn_idx.size, targets.size)
    if distance == "gaussian":
        layer_maps, gaussians = _gaussian_layer_maps(tree, layers, real_idx, fold, model_of, targets, shrinkage,
                                                     batch_size, centre)
        params = {"distance": "squared Mahalanobis / channels, shrunk covariance", "shrinkage": shrinkage}
        extra = {}
        for l, gs in gaussians.items():
            extra[f"mean_{l}"] = (("fold", f"channel_{l}"), np.stack([g.mean for g in gs]))
            extra[f"precision_{l}"] = (("fold", f"channel_{l}", f"channel2_{l}"), np.stack([g.precision for g in gs]))
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
        if bp["location"]:  # divide by the real images' median at each location (borders score high)
            joint = sum(layer_maps[l] * (w[l] / total) for l in layers)
            norm = np.maximum(location_median(joint, real_rows, leave_out(table, targets, real_rows)), 1e-12)
            layer_maps = {l: m / norm for l, m in layer_maps.items()}
            full = np.full((len(table), *norm.shape[1:]), np.nan, np.float32)
            full[targets] = norm
            extra["location_scale"] = (("image", f"y_{bp['grid']}", f"x_{bp['grid']}"), full)
        layer_maps = {l: smooth_cells(m, bp["smooth"]) for l, m in layer_maps.items()}
        joint = sum(layer_maps[l][real_rows] * (w[l] / total) for l in layers)
        layer_scales = dict.fromkeys(layers, float(np.median(joint)) or 1.0)
    layer_maps = {l: m / layer_scales[l] for l, m in layer_maps.items()}
    extra["reference_fold"] = (("image",), model_of.astype(np.int8))
    if distance == "memory_bank" and bp["set_novelty"]:
        layer_maps, set_extra, params["sets"] = _with_set_novelty(
            tree, table, layers, w, model_of, targets, layer_maps, banks, {**bp, "seed": seed, "centre": centre},
            batch_size)
        extra.update(set_extra)
    threshold = calibrate_batches(lambda: fused_batches(layer_maps, w, size, real_rows), fpr)
    ds = build_dataset(tree, "reference", targets, layer_maps, w, size, threshold, fpr,
                       calibration="real images scored by the model of the other fold "
                                   "(cross-fitted); threshold = 1 - fpr quantile of their scores",
                       params={**params, "centre": centre, "folds": 2, "fold_split": "similar", "seed": seed, "layer_scales": layer_scales},
                       n_img=len(table), extra=extra)
    return Maps("reference", ds, time.perf_counter() - t0)


def _with_set_novelty(tree, table, layers, w, model_of, targets, layer_maps, banks, bp, batch_size):
    """The synthetic rows' layer maps replaced by those of ``R^(1 - a) S^a`` (:mod:`.set_novelty`), the
    sets' banks, scales and weights as maps-group variables, and per set what was fitted."""
    grid = next(iter(layer_maps.values())).shape[1:]
    row_of = {int(t): r for r, t in enumerate(targets)}
    own = {l: np.full_like(m, np.nan) for l, m in layer_maps.items()}
    names, set_banks, info = [], [], []
    scales, weights = [], []
    set_location = np.full((len(table), *grid), np.nan, np.float32)
    empty = np.zeros((0, banks[0].bank.shape[1]), np.float32)
    for name, members in set_members(set_of_images(table), table).items():
        names.append(name)
        rows = np.array([row_of[int(i)] for i in members])
        fitted, c = {}, np.nan
        if members.size >= 2:
            # the set's coherence c: its images' median squared distance to their own set's bank over
            # that to the real bank (raw, on at most COHERENCE_IMAGES images per fold)
            raw = {"real": [], "set": []}
            for k, idx in set_bank_folds(model_of, members).items():
                fitted[k] = fit_set_bank(tree, layers, idx, banks[k].scale, grid, bp, batch_size)
                some = members[model_of[members] == k][:COHERENCE_IMAGES]
                for key, b in (("real", banks[k]), ("set", fitted[k])):
                    raw[key].append(raw_distances(tree, layers, some, b, grid, bp))
            c = float(np.median(np.concatenate(raw["set"])) / max(np.median(np.concatenate(raw["real"])), 1e-12))
        a = set_exponent(c)
        if bp["set_weight"] is not None and fitted:  # a fixed exponent (ablations, tests)
            a = float(bp["set_weight"])
        reference = set_reference(members, int(bp["set_images"]), int(bp["seed"]))
        for k in fitted if a > 0 else ():  # scaled by the real bank of the fold that scores the images
            set_distances(tree, layers, rows[model_of[members] == k], targets, reference, banks[k].scale,
                          banks[k].slices, grid, bp, w, own, batch_size)
        set_banks.append([fitted[k].bank if k in fitted else empty for k in (0, 1)])
        scale = np.nan
        if a > 0:
            sub = smooth_all({l: m[rows] for l, m in own.items()}, bp["smooth"])
            total = sum(w[l] for l in layers)
            scale = float(np.median(sum(sub[l] * (w[l] / total) for l in layers))) or 1.0
            shares, joint = geometric_shares({l: m[rows] for l, m in layer_maps.items()},
                                             {l: m / scale for l, m in sub.items()}, w, a)
            if bp["set_location"] and rows.size >= 3:
                # the set's own location step: each location divided by (the set's other images'
                # median there over the set's overall median)^a -- a render's typical layout (a
                # ceiling light in the same corner of every view) is not a detail
                at = np.arange(rows.size)
                div = (np.maximum(location_median(joint, at, at), 1e-12) / max(float(np.median(joint)), 1e-12)) ** a
                shares = {l: m / div for l, m in shares.items()}
                set_location[targets[rows]] = div
            for l in layers:
                layer_maps[l][rows] = shares[l]
        scales.append(scale)
        weights.append(a)
        info.append({"set": name, "images": int(members.size), "coherence": c, "weight": a,
                     "bank_sizes": [int(fitted[k].bank.shape[0]) if k in fitted else 0 for k in (0, 1)]})
    m = max(1, max(b.shape[0] for pair in set_banks for b in pair))
    stacked = np.full((len(names), 2, m, banks[0].bank.shape[1]), np.nan, np.float32)
    for s_, pair in enumerate(set_banks):
        for k, b in enumerate(pair):
            stacked[s_, k, :b.shape[0]] = b
    extra = {"set_bank": (("reference_set", "fold", "set_bank_patch", "bank_feature"), stacked),
             "set_scale": (("reference_set",), np.array(scales, np.float64)),
             "set_weight": (("reference_set",), np.array(weights, np.float64))}
    if np.isfinite(set_location).any():
        extra["set_location_scale"] = (("image", f"y_{bp['grid']}", f"x_{bp['grid']}"), set_location)
    return layer_maps, extra, info


def location_median(maps: np.ndarray, real_rows: np.ndarray, left_out: np.ndarray) -> np.ndarray:
    """Per-location median of the real images' maps ``maps[real_rows]`` for every row of ``maps``,
    leaving out the real row ``left_out[i]`` (a position in ``real_rows``; -1: none): a real image
    is not normalised by its own score, nor a synthetic image by its partner's. Exact, from the
    ranks of the sorted real maps (``O(N log N)`` per location)."""
    v = maps[real_rows].reshape(real_rows.size, -1)
    n = v.shape[0]
    order = np.argsort(v, axis=0, kind="stable")
    srt = np.take_along_axis(v, order, axis=0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n)[:, None], order.shape), axis=0)
    lo, hi = (n - 2) // 2, (n - 1) // 2  # middle positions once one row is left out
    r = rank[np.maximum(left_out, 0)]
    left = np.where(lo < r, srt[lo], srt[min(lo + 1, n - 1)])
    right = np.where(hi < r, srt[hi], srt[min(hi + 1, n - 1)])
    out = 0.5 * (left + right)
    out[left_out < 0] = np.median(v, axis=0)
    return out.reshape(maps.shape)


def leave_out(table: pd.DataFrame, targets: np.ndarray, real_rows: np.ndarray) -> np.ndarray:
    """For every target, the position in ``real_rows`` of itself (a real image) or of its real
    partner (a synthetic image, :func:`fakesegment_nb.store.partners`), -1 if none."""
    at = {int(targets[r]): i for i, r in enumerate(real_rows)}
    found = partners(table)
    partner_of = dict(zip(found["i_syn"].tolist(), found["i_real"].tolist()))
    return np.array([at.get(int(t), at.get(partner_of.get(int(t), -1), -1)) for t in targets], int)


def _stack_banks(banks: list[np.ndarray]) -> np.ndarray:
    """Two folds' banks in one array, the smaller padded with NaN rows."""
    m = max(b.shape[0] for b in banks)
    out = np.full((len(banks), m, banks[0].shape[1]), np.nan, np.float32)
    for k, b in enumerate(banks):
        out[k, :b.shape[0]] = b
    return out


def _gaussian_layer_maps(tree, layers, real_idx, fold, model_of, targets, shrinkage, batch_size, centre):
    """Per-layer squared Mahalanobis distance / channels of ``targets`` (cross-fitted), and each
    layer's two fitted Gaussians (fold 0, fold 1)."""
    layer_maps, gaussians = {}, {}
    for layer in layers:
        c, h, wd = tree["layers"][layer]["features"].shape[1:]
        out = np.zeros((targets.size, h, wd), np.float32)
        gaussians[layer] = []
        for k in (0, 1):
            g = fit_layer_gaussian(tree, layer, real_idx[fold[real_idx] == k], shrinkage, batch_size, centre)
            gaussians[layer].append(g)
            prec_t = torch.from_numpy(g.precision.astype(np.float32))
            mean_t = torch.from_numpy(g.mean.astype(np.float32))
            sel = np.flatnonzero(model_of[targets] == k)
            for b in batches(sel.size, batch_size):
                rows = sel[b]
                f = read_features(tree, layer, targets[rows])
                v = torch.from_numpy(centre_features(f) if centre else f).permute(0, 2, 3, 1).reshape(-1, c)
                out[rows] = mahalanobis(v, mean_t, prec_t).reshape(rows.size, h, wd).numpy()
        layer_maps[layer] = out
    return layer_maps, gaussians


def _memory_bank_layer_maps(tree, layers, w, fold, model_of, targets, batch_size, bank_params):
    """Per-layer squared-distance maps (on the bank's grid) of ``targets``, each scored against the
    bank of the fold ``model_of`` names; plus the two banks."""
    grid_layer = bank_params["grid"]
    grid = tuple(tree["layers"][grid_layer]["features"].shape[2:])
    dom_real = np.flatnonzero(fold >= 0)
    out = {l: np.zeros((targets.size, *grid), np.float32) for l in layers}
    banks = []
    fit = {k: v for k, v in bank_params.items()
           if k not in ("grid", "density", "location", "smooth", "set_novelty", "set_weight", "set_location",
                       "set_images")}
    for k in (0, 1):
        mb = fit_memory_bank(tree, layers, dom_real[fold[dom_real] == k], w, grid, batch_size=batch_size, **fit)
        banks.append(mb)
        bank_t = torch.from_numpy(mb.bank)
        scale_t = torch.from_numpy(mb.scale)
        spread = bank_spread(bank_t, int(bank_params["density"]))
        sel = np.flatnonzero(model_of[targets] == k)
        for b in batches(sel.size, batch_size):
            rows = sel[b]
            q = patch_rows(tree, layers, targets[rows], scale_t, grid, fit["pool"], fit["centre"]).flatten(0, 1)
            diff = bank_distances(q, bank_t, spread)
            for l, (a, z) in mb.slices.items():
                # the layer's share of the squared distance, undone from its fusion weight
                d = diff[:, a:z].sum(1) * (sum(w[x] for x in layers) / w[l])
                out[l][rows] = d.reshape(rows.size, *grid).numpy()
    return out, banks
