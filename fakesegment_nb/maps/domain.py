"""The ``domain`` maps (:func:`domain_maps`): per location, how much an image looks like its synthetic
set rather than like the real images -- "where does this look rendered".

A weakly supervised patch classifier (the image-level labels are the only supervision: every patch of
a real image is "real", every patch of a synthetic image "synthetic"):

* **features** (:func:`domain_patches`): the weighted layers' stored features (not centred: the
  global look is what this map is about); per layer, each channel's mean over a ``pool`` x ``pool``
  neighbourhood of cells and, with ``spread``, its standard deviation there (a texture statistic:
  how much the channel varies locally, which a render's clean surfaces and a photo's grain and
  clutter set apart), resampled onto one grid (:func:`~.memory_bank.neighbourhood_patches`), so a
  location is one vector of every layer's channel means and spreads;
* **classifier**: scikit-learn's ``LogisticRegression`` (L2, ``C``, balanced class weights) on
  standardised features (``StandardScaler``), fitted on at most ``max_patches`` patches (and
  ``max_values`` patches x features): an equal, seeded random share of every image's locations;
  with ``relabel`` (a quantile ``q``), refitted once without the synthetic patches that the first
  fit scores at or below the ``q`` quantile of the real patches' scores -- the image-level label
  "synthetic" is wrong for a synthetic image's real-looking parts, and the refit no longer learns
  them as synthetic (multiple-instance relabelling, as mi-SVM does). Linear, so the score is exactly a sum of
  per-feature terms (:func:`domain_terms`) and :func:`fakesegment_nb.segments.attribute` splits a
  region's score by layer and channel without approximation (a channel's share is the sum of its
  mean's and its spread's terms);
* **score**: ``sum_c w_c (x_c - m_c)``, the classifier's logit minus the logit of the fold's mean
  real training patch ``m`` (0 = as rendered-looking as an average real location; a monotone shift
  of the logit per fold), smoothed by a Gaussian of ``smooth`` cells (linear: the terms still add up),
  upsampled bilinearly to the input size. The ``layer_<name>`` maps are each layer's share of it;
* **cross-fitting**: the images of a set and the real images are split into ``folds`` folds by
  scikit-learn's ``StratifiedGroupKFold`` (a synthetic image and its real partner are one group, so a
  pair stays in one fold); every image, real or synthetic, is scored by the classifier fitted
  without its fold, so no image is scored by a classifier that saw it, nor a synthetic image by one
  that saw its twin;
* **calibration**: the mask threshold is the ``1 - fpr`` quantile of the real images' out-of-fold
  scores (:func:`fakesegment_nb.calibration.calibrate`), per set;
* **per set**: :func:`fit_domain` fits one set's synthetic images against the real images (the
  real reference is shared); :func:`domain_maps` loops over the store's sets (a store without sets
  is one set, ``synthetic``). A real image's stored score is its out-of-fold score under the first
  set's classifiers.

What the classifier could learn instead of the look of the renders (shortcuts). It sees images only
as :mod:`fakesegment_nb.extract` stored them: decoded to 8-bit RGB (alpha dropped) and resized to
the network input by the model's own transform, whatever the file format or size -- so the file
format and the pixel size themselves are not visible to it. What survives decoding and resizing is:

* compression: JPEG blocking and ringing in photos against lossless PNG renders (8x8 blocks shrink
  with the downscale but do not vanish for small photos);
* resolution: a render upscaled (blurry) or a photo downscaled (sharp), or the other way round;
  different resampling chains before the files were written;
* aspect ratio: every image is squashed to a square input, so a 16:9 render and a 4:3 photo are
  distorted differently (``extract --input-size`` keeps the aspect ratio);
* borders and overlays: letterboxing, vignetting, watermarks, HUDs, timestamps;
* the sensor: photo grain, chromatic aberration, lens blur, rolling shutter, which renders lack --
  part of the rendered look, but also what a photo pasted into a render carries;
* content: scenes, objects, viewpoints or weather only one domain shows (a real set of streets at
  noon against renders at night) are learned as "domain".

Make the real and synthetic sets alike in these ways (same format, size, aspect ratio, content)
before reading this map as "looks rendered".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..calibration import DEFAULT_FPR, calibrate_batches
from ..errors import FakesegmentError, ParameterError
from ..store import image_table, layer_names, partners
from .features import as_tree, batches, input_size, read_features, set_of_images
from .group import Maps, build_dataset, fused_batches
from .memory_bank import neighbourhood_patches, smooth_cells
from .settings import MIN_DOMAIN_IMAGES, domain_params, layer_weights

__all__ = ["DomainFit", "domain_folds", "domain_maps", "domain_patches", "domain_terms", "feature_slices", "fit_domain"]


@dataclass
class DomainFit:
    """One set's fitted domain classifiers (one per fold) and its cross-fitted layer maps.

    Attributes
    ----------
    images : positions (in the root) of the images of the fit: the set's synthetic images, then the
        real images.
    fold : ``(len(images),)`` the fold of each image; the classifier of fold ``k`` was fitted on the
        images of every other fold and scores the images of fold ``k``.
    coef : ``(folds, D)`` float32, per fold the weight of every feature on the raw (unstandardised)
        patch features.
    centre : ``(folds, D)`` float32, per fold the mean real training patch ``m``.
    layer_maps : ``{layer: (len(images), h, w)}`` float32, each layer's share of the score (smoothed),
        on the grid.
    slices : ``{layer: (start, stop)}``: the features of each layer.
    patches : training patches per fold.
    """

    images: np.ndarray
    fold: np.ndarray
    coef: np.ndarray
    centre: np.ndarray
    layer_maps: dict[str, np.ndarray]
    slices: dict[str, tuple[int, int]]
    patches: list[int]


def domain_folds(table: pd.DataFrame, syn_idx: np.ndarray, real_idx: np.ndarray, folds: int,
                 seed: int = 0) -> np.ndarray:
    """The fold of each of ``syn_idx`` then ``real_idx`` (positions in ``table``): scikit-learn's
    ``StratifiedGroupKFold`` (shuffled with ``seed``) over the two domains, a synthetic image and its
    real partner in one group."""
    from sklearn.model_selection import StratifiedGroupKFold

    images = np.concatenate([syn_idx, real_idx])
    group = images.copy()
    found = partners(table)
    partner_of = dict(zip(found["i_syn"].tolist(), found["i_real"].tolist()))
    real_set = set(real_idx.tolist())
    for k, i in enumerate(images[:syn_idx.size]):
        p = partner_of.get(int(i))
        if p is not None and p in real_set:
            group[k] = p
    y = np.r_[np.ones(syn_idx.size, int), np.zeros(real_idx.size, int)]
    fold = np.full(images.size, -1, int)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(cv.split(np.zeros(images.size), y, group)):
        fold[test] = k
    return fold


def domain_patches(tree, layers: list[str], idx: np.ndarray, grid: tuple[int, int], pool: int,
                   spread: bool) -> torch.Tensor:
    """The classifier's features of the stored images ``idx``: ``(len(idx), D, *grid)``. Per layer
    (in the order of ``layers``) its ``C`` channels' means over a ``pool`` x ``pool`` neighbourhood of
    cells (stride 1, borders over the cells that exist), then, with ``spread``, their standard
    deviations there; resampled onto ``grid`` (:func:`~.memory_bank.neighbourhood_patches`)."""
    def mean(x):
        return F.avg_pool2d(x, pool, stride=1, padding=pool // 2, count_include_pad=False) if pool > 1 else x

    feats = {}
    for l in layers:
        f = torch.from_numpy(read_features(tree, l, idx))
        feats[l] = m = mean(f)
        if spread:
            feats[f"{l}.spread"] = (mean(f * f) - m * m).clamp_min(0).sqrt()
    return neighbourhood_patches(feats, grid, 1)


def feature_slices(tree, layers: list[str], spread: bool) -> dict[str, tuple[int, int]]:
    """Each layer's features in :func:`domain_patches`' vector: ``{layer: (start, stop)}``, its
    channels' means then (``spread``) their spreads."""
    slices, start = {}, 0
    for l in layers:
        c = tree["layers"][l]["features"].shape[1] * (2 if spread else 1)
        slices[l] = (start, start + c)
        start += c
    return slices


def domain_terms(q: torch.Tensor, coef: np.ndarray, centre: np.ndarray) -> torch.Tensor:
    """Per-feature terms ``w_c (x_c - m_c)`` of patches ``q`` ``(B, D, h, w)``: summed over
    features they are the score before smoothing."""
    w = torch.from_numpy(np.asarray(coef, np.float32))[None, :, None, None]
    m = torch.from_numpy(np.asarray(centre, np.float32))[None, :, None, None]
    return (q - m) * w


def _fit_linear(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> np.ndarray:
    """Weights on raw features of a standardised, balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=1000, random_state=seed)
    clf.fit(scaler.transform(x), y)
    return (clf.coef_[0] / scaler.scale_).astype(np.float32)


def _train(x: np.ndarray, y: np.ndarray, c: float, seed: int,
           relabel: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weights on raw features, mean real patch) of the classifier; with ``relabel`` a quantile
    ``q``, refitted once on the real patches and the synthetic patches the first fit scores above the
    ``q`` quantile of the real patches' scores (a synthetic image's real-looking patches -- a photo
    pasted in, a surface rendered as a photo shows it -- no longer count as "synthetic")."""
    coef = _fit_linear(x, y, c, seed)
    centre = x[y == 0].mean(0).astype(np.float32)
    if relabel is not None:
        s = (x - centre) @ coef
        keep = (y == 0) | (s > np.quantile(s[y == 0], float(relabel)))
        if keep[y == 1].any():  # else no synthetic patch looks more synthetic than the real ones: keep the fit
            coef = _fit_linear(x[keep], y[keep], c, seed)
    return coef, centre


def fit_domain(tree, syn_idx: np.ndarray, real_idx: np.ndarray, layers: list[str], params: dict,
               seed: int = 0, batch_size: int = 16) -> DomainFit:
    """Fit one set's cross-fitted domain classifiers and score its images and the real images.

    Parameters
    ----------
    tree : the open store.
    syn_idx, real_idx : positions of the set's synthetic images and of the real images (at least
        :data:`~fakesegment_nb.maps.settings.MIN_DOMAIN_IMAGES` of each).
    layers : the layers whose features the classifier sees.
    params : :func:`~fakesegment_nb.maps.settings.domain_params` (``grid``, ``pool``, ``spread``,
        ``folds``, ``max_patches``, ``max_values``, ``C``, ``smooth``).
    seed : the folds' shuffle and the training patches drawn.
    batch_size : images read at once.
    """
    table = image_table(tree)
    images = np.concatenate([syn_idx, real_idx])
    y = np.r_[np.ones(syn_idx.size, int), np.zeros(real_idx.size, int)]
    folds = int(min(params["folds"], syn_idx.size, real_idx.size))
    fold = domain_folds(table, syn_idx, real_idx, folds, seed)
    grid = tuple(tree["layers"][params["grid"]]["features"].shape[2:])
    pool, spread = int(params["pool"]), bool(params["spread"])
    slices = feature_slices(tree, layers, spread)
    start = slices[layers[-1]][1]
    cells = grid[0] * grid[1]
    budget = min(int(params["max_patches"]), int(params["max_values"]) // start)
    per_image = max(1, min(cells, budget // images.size))
    # the training patches: an equal seeded share of every image's locations (which ones depends
    # on the image's position and the seed only, never on the features)
    train = np.empty((images.size, per_image, start), np.float32)
    for b in batches(images.size, batch_size):
        q = domain_patches(tree, layers, images[b], grid, pool, spread)
        q = q.reshape(q.shape[0], start, cells).permute(0, 2, 1).numpy()
        for j, i in enumerate(range(b.start, b.stop)):
            pick = np.random.default_rng([seed, int(images[i])]).choice(cells, per_image, replace=False)
            train[i] = q[j, np.sort(pick)]
    coef = np.zeros((folds, start), np.float32)
    centre = np.zeros((folds, start), np.float32)
    patches = []
    for k in range(folds):
        sel = fold != k
        x = train[sel].reshape(-1, start)
        coef[k], centre[k] = _train(x, np.repeat(y[sel], per_image), float(params["C"]), seed,
                                    params.get("relabel"))
        patches.append(int(x.shape[0]))
    del train
    out = {l: np.zeros((images.size, *grid), np.float32) for l in layers}
    for b in batches(images.size, batch_size):
        q = domain_patches(tree, layers, images[b], grid, pool, spread)
        for j, i in enumerate(range(b.start, b.stop)):
            t = domain_terms(q[j:j + 1], coef[fold[i]], centre[fold[i]])[0]
            for l, (a, z) in slices.items():
                out[l][i] = t[a:z].sum(0).numpy()
    out = {l: smooth_cells(m, float(params["smooth"])) for l, m in out.items()}
    return DomainFit(images, fold, coef, centre, out, slices, patches)


def domain_maps(store, weights: dict[str, float] | None = None, fpr: float = DEFAULT_FPR, seed: int = 0,
                batch_size: int = 16, domain: dict | None = None) -> Maps:
    """Compute the ``domain`` maps of every synthetic and real image (see the module docstring).

    Parameters
    ----------
    store : path/URL of a feature store or an open DataTree.
    weights : which layers the classifier sees: those with a positive weight (default the model's,
        :data:`~fakesegment_nb.maps.settings.LAYER_WEIGHTS`); the classifier weighs them itself.
    fpr : false-positive rate on the real images' out-of-fold scores for the mask threshold.
    seed : the folds and the training patches.
    batch_size : images read at once.
    domain : settings overriding the model's (:func:`~fakesegment_nb.maps.settings.domain_params`).

    Returns
    -------
    Maps with a score for every image (real images: out of fold), not yet written, with the fitted
    state: ``domain_coef`` and ``domain_centre`` ``(domain_set, fold, domain_feature)``,
    ``domain_fold`` ``(domain_set, image)`` (the fold whose classifier scored each image, -1 when
    the set's fit did not hold it).

    Raises
    ------
    FakesegmentError
        No synthetic or too few images of either domain (one line saying how many it needs).
    """
    t0 = time.perf_counter()
    tree = as_tree(store)
    table = image_table(tree)
    dom = table["domain"].to_numpy()
    real_idx = np.flatnonzero(dom == "real")
    sets = set_of_images(table)
    names = list(dict.fromkeys(sets[dom == "synthetic"]))
    if not names:
        raise FakesegmentError(f"the store has no synthetic images (only {real_idx.size} real): the domain map "
                               "tells synthetic from real; extract a synthetic folder into it first")
    need = MIN_DOMAIN_IMAGES
    small = [f"{s} has {int((sets == s).sum())}" for s in names if (sets == s).sum() < need]
    if real_idx.size < need or small:
        have = f"the store has {real_idx.size} real" if real_idx.size < need else f"set {small[0]}"
        raise FakesegmentError(f"the domain map needs at least {need} real and {need} synthetic images per set "
                               f"(cross-fitted classifiers); {have}")
    w = layer_weights(tree, weights, method="domain")
    layers = [l for l in layer_names(tree) if w[l] > 0]
    p = domain_params(tree, layers, domain)
    size = input_size(tree)
    n = len(table)
    fits = [fit_domain(tree, np.flatnonzero(sets == s), real_idx, layers, p, seed, batch_size) for s in names]
    grid = next(iter(fits[0].layer_maps.values())).shape[1:]
    # each layer's share of the score; a real image keeps the first set's (the sets are written in
    # reverse order, so the first set's rows come last)
    layer_maps = {l: np.zeros((n, *grid), np.float32) for l in layers}
    fold = np.full((len(names), n), -1, np.int16)
    thresholds = np.full(n, np.nan)
    unit = dict.fromkeys(layers, 1.0)
    for s, fit in reversed(list(enumerate(fits))):
        for l in layers:
            layer_maps[l][fit.images] = fit.layer_maps[l]
        fold[s, fit.images] = fit.fold
        real_rows = np.arange(fit.images.size - real_idx.size, fit.images.size)
        # fuse() averages the layers: each share times the number of layers sums them instead
        real = {l: fit.layer_maps[l][real_rows] * len(layers) for l in layers}
        thresholds[fit.images] = calibrate_batches(lambda: fused_batches(real, unit, size), fpr)
    targets = np.flatnonzero(np.isfinite(thresholds))
    share = {l: m[targets] * len(layers) for l, m in layer_maps.items()}
    del layer_maps
    k_max = max(f.coef.shape[0] for f in fits)
    d = fits[0].coef.shape[1]
    coef = np.full((len(names), k_max, d), np.nan, np.float32)
    centre = np.full((len(names), k_max, d), np.nan, np.float32)
    for s, fit in enumerate(fits):
        coef[s, :fit.coef.shape[0]] = fit.coef
        centre[s, :fit.centre.shape[0]] = fit.centre
    extra = {"domain_coef": (("domain_set", "fold", "domain_feature"), coef),
             "domain_centre": (("domain_set", "fold", "domain_feature"), centre),
             "domain_fold": (("domain_set", "image"), fold)}
    params = {"classifier": "standardised logistic regression (L2, balanced), sklearn", **p, "seed": seed,
              "sets": names, "folds": [int(f.coef.shape[0]) for f in fits], "patches": [f.patches for f in fits],
              "slices": fits[0].slices,
              "score": "logit minus the logit of the fold's mean real training patch, smoothed; sum of "
                       "the layer_<name> maps"}
    ds = build_dataset(tree, "domain", targets, share, unit, size, thresholds[targets], fpr,
                       calibration="real images scored out of fold (cross-fitted classifiers); per set, threshold "
                                   "= 1 - fpr quantile of the real images' scores",
                       params=params, n_img=n, extra=extra)
    return Maps("domain", ds, time.perf_counter() - t0)

