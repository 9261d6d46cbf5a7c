"""The ``paired`` maps (:func:`paired_maps`): where a synthetic image's features differ from its
real partner's.

For each synthetic image with a real partner, per layer ``l`` and location ``x``:

* features are divided per channel by the real images' spread ``sigma_c`` (standard deviation of
  channel ``c`` over the real images and locations, :func:`fit_paired`; dead channels get the
  layer's median spread), ``Z = F / sigma``;
* ``ssim_l(x) = 1 -`` local SSIM of ``Z_syn`` and ``Z_real`` (per-channel SSIM maps with a
  Gaussian window of :data:`SSIM_SIGMA` cells, averaged over the channels that have a range), on
  maps of at least :data:`SSIM_MIN_CELLS` cells a side;
* ``sq_l(x) = mean_c D_c(x)^2`` with ``D = Z_syn - Z_real`` minus its per-channel median over
  locations (an image-wide change of a channel -- exposure drift, white balance, missing
  grain -- is not a *local* detail);
* each component is divided by its median over all synthetic locations of the store (1 = a
  typical discrepancy of that layer) and the layer map is their weighted mean, weights per model
  (:func:`~fakesegment_nb.maps.settings.paired_components`, where the measurements are).

Both components are means over channels of per-channel terms, computed by one function,
:func:`paired_terms`, for the maps and for the attribution of a region to channels
(:func:`fakesegment_nb.segments.attribute`).

Mask calibration: a real image has no paired score of its own (its discrepancy to itself is 0), so
the null is built from real images: each of up to :data:`MAX_NULL_IMAGES` real images is paired
with itself moved by one input pixel (``1/stride`` of a cell per layer, linear interpolation;
along y for half of them, along x for the others) and scored with the same statistic. Every map
is standardised by its own median and MAD (the renderer's global look sets each pair's background
level); ``z*`` is the ``1 - fpr`` quantile of the standardised null maps, and an image's threshold
is ``median + z* x MAD`` of its own score map (:mod:`fakesegment_nb.calibration`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..calibration import DEFAULT_FPR, calibrate_z, per_image_thresholds, shift_fraction
from ..errors import FakesegmentError
from ..ssim import data_range, ssim_map
from ..store import image_table, layer_names
from .features import as_tree, batches, image_pairs, input_size, read_features, real_spread
from .group import Maps, build_dataset, fuse, fused_batches
from .settings import MAX_NULL_IMAGES, SSIM_MIN_CELLS, SSIM_SIGMA, layer_weights, paired_components

__all__ = ["PairedTerms", "components_used", "fit_paired", "paired_maps", "paired_spreads", "paired_terms"]


@dataclass
class PairedTerms:
    """Per-channel terms of one layer for a batch of ``B`` pairs of ``C``-channel maps.

    Attributes
    ----------
    sq : ``(B, C, h, w)`` float32 ``D_c^2`` (see the module docstring).
    ssim : ``(B, C, h, w)`` float32 SSIM of each channel pair, or None when not asked for.
    ssim_valid : ``(B, C)`` bool, the channels whose pair has a (finite, non-zero) range; the others
        are left out of the SSIM mean.
    """

    sq: np.ndarray
    ssim: np.ndarray | None = None
    ssim_valid: np.ndarray | None = None

    def channel_means(self) -> dict[str, np.ndarray]:
        """The layer's raw components ``(B, h, w)``: ``"sq"`` the mean of ``D_c^2`` over channels,
        ``"ssim"`` 1 - the mean SSIM over the valid channels (0 where no channel is valid)."""
        out = {"sq": self.sq.mean(axis=1)}
        if self.ssim is not None:
            s = torch.from_numpy(self.ssim)
            valid = torch.from_numpy(self.ssim_valid)[..., None, None].expand_as(s)
            mean = torch.where(valid, s, torch.zeros((), dtype=s.dtype)).sum(dim=1) / valid.sum(dim=1).to(s.dtype)
            out["ssim"] = 1.0 - torch.nan_to_num(mean, nan=1.0).numpy()
        return out

    def channel_terms(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per component, ``(terms (B, C, h, w), divisor (B,))``: ``terms / divisor`` summed over
        channels is :meth:`channel_means` (``"sq"``: ``D_c^2`` over ``C``; ``"ssim"``: ``1 - SSIM_c``
        over the number of valid channels (at least 1), 0 for the others)."""
        b, c = self.sq.shape[:2]
        out = {"sq": (self.sq, np.full(b, c))}
        if self.ssim is not None:
            valid = self.ssim_valid[..., None, None]
            out["ssim"] = (np.where(valid, 1.0 - self.ssim, 0.0).astype(np.float32),
                           np.maximum(self.ssim_valid.sum(axis=1), 1))
        return out


def paired_terms(zs: np.ndarray, zr: np.ndarray, with_ssim: bool = True) -> PairedTerms:
    """The per-channel terms of spread-normalised synthetic and real maps ``(B, C, h, w)``."""
    d = zs - zr
    d = d - np.median(d.reshape(*d.shape[:2], -1), axis=2)[:, :, None, None]
    if not with_ssim:
        return PairedTerms(d ** 2)
    a, b = torch.from_numpy(zs), torch.from_numpy(zr)
    rng = data_range(a, b)  # each channel pair's joint range, as local_ssim takes it
    ok = (rng != 0) & torch.isfinite(rng)
    s = ssim_map(a, b, data_range=torch.where(ok, rng, torch.ones_like(rng)), sigma=SSIM_SIGMA)
    return PairedTerms(d ** 2, s.numpy(), ok.numpy())


def components_used(components: dict[str, float], shape: tuple[int, int]) -> dict[str, float]:
    """The components of a layer with ``shape`` cells that weigh: SSIM only on maps of at least
    :data:`SSIM_MIN_CELLS` a side; the squared difference alone when nothing else is left."""
    use = {k: v for k, v in components.items() if v > 0 and (k != "ssim" or min(shape) >= SSIM_MIN_CELLS)}
    return use or {"sq": 1.0}


def fit_paired(tree, layers: list[str], real_idx: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fitted state of the paired maps: the real images of the null and the real spread of
    every layer of ``layers`` (in that order), all drawn from one generator seeded 0.

    Returns ``(null image positions, {layer: (C,) float32 spread})``.
    """
    rng = np.random.default_rng(0)
    null_idx = real_idx if real_idx.size <= MAX_NULL_IMAGES else np.sort(
        rng.choice(real_idx, MAX_NULL_IMAGES, replace=False))
    return null_idx, {layer: real_spread(tree, layer, real_idx, rng)[1] for layer in layers}


def paired_spreads(tree, ds) -> dict[str, np.ndarray]:
    """The spread each layer of stored paired maps ``ds`` divided features by: the stored
    ``spread_<layer>``, or refitted exactly as the maps fitted it (:func:`fit_paired`) for maps
    written without it."""
    layers = list(ds.attrs["layers"])
    if all(f"spread_{l}" in ds.data_vars for l in layers):
        return {l: np.asarray(ds[f"spread_{l}"].values, np.float32) for l in layers}
    real_idx = np.flatnonzero(image_table(tree)["domain"].to_numpy() == "real")
    return fit_paired(tree, layers, real_idx)[1]


def paired_maps(store, weights: dict[str, float] | None = None, fpr: float = DEFAULT_FPR,
                batch_size: int = 8, components: dict[str, float] | None = None) -> Maps:
    """Compute the ``paired`` maps of every synthetic image that has a real partner.

    Parameters
    ----------
    store : path/URL of a feature store or an open DataTree.
    weights : per-layer fusion weights overriding the model's
        (:data:`~fakesegment_nb.maps.settings.LAYER_WEIGHTS`, e.g. ``{"fc7": 0}``).
    fpr : false-positive rate at which the mask thresholds are calibrated.
    batch_size : pairs processed at once.
    components : weights of the per-layer components, default the model's
        (:func:`~fakesegment_nb.maps.settings.paired_components`; ``"ssim"``: 1 - local SSIM,
        ``"sq"``: squared difference).

    Returns
    -------
    Maps, not yet written (see :func:`~fakesegment_nb.maps.group.write_maps`), with the spread of
    every weighted layer (``spread_<layer>``).

    Raises
    ------
    FakesegmentError
        The store holds no pair of a synthetic and a real image (use ``reference``).
    """
    t0 = time.perf_counter()
    tree = as_tree(store)
    table = image_table(tree)
    syn, real = image_pairs(table)
    if syn.size == 0:
        raise FakesegmentError("the store has no synthetic image paired with a real one, so the "
                               "'paired' method does not apply; use --method reference")
    comp_w = dict(paired_components(tree) if components is None else components)
    size = input_size(tree)
    w = layer_weights(tree, weights, method="paired")
    layers = [l for l in layer_names(tree) if w[l] > 0]
    real_all = np.flatnonzero(table["domain"].to_numpy() == "real")
    null_idx, spreads = fit_paired(tree, layers, real_all)
    layer_maps, null_maps, scales = {}, {}, {}
    for layer in layers:
        inv = (1.0 / spreads[layer])[None, :, None, None]
        shape = tree["layers"][layer]["features"].shape[2:]
        use = components_used(comp_w, shape)
        # filled batch by batch (not lists of batches joined afterwards: fewer copies, and no small
        # arrays kept between each batch's large temporaries to fragment the heap)
        comp = {k: np.empty((syn.size, *shape), np.float32) for k in use}
        ncomp = {k: np.empty((null_idx.size, *shape), np.float32) for k in use}
        for b in batches(syn.size, batch_size):
            zs = read_features(tree, layer, syn[b]) * inv
            zr = read_features(tree, layer, real[b]) * inv
            res = paired_terms(zs, zr, "ssim" in use).channel_means()
            for k in use:
                comp[k][b] = res[k]
        # the real-image null: each real image against itself moved by one input pixel
        # (1/stride of a cell, linear interpolation), along y for every other batch, else x
        step = 1.0 / (size[0] / shape[0])
        for j, b in enumerate(batches(null_idx.size, batch_size)):
            zr = read_features(tree, layer, null_idx[b]) * inv
            dy, dx = (step, 0.0) if j % 2 == 0 else (0.0, step)
            res = paired_terms(shift_fraction(zr, dy, dx), zr, "ssim" in use).channel_means()
            for k in use:
                ncomp[k][b] = res[k]
        parts, nparts = [], []
        total = sum(use.values())
        for k, cw in use.items():
            v = comp[k]
            scale = float(np.median(v)) or 1.0
            scales[f"{layer}.{k}"] = scale
            parts.append(v * (cw / total / scale))
            nparts.append(ncomp[k] * (cw / total / scale))
        layer_maps[layer] = np.sum(parts, axis=0)
        null_maps[layer] = np.sum(nparts, axis=0)
    z_star = calibrate_z(fuse(null_maps, w, size), fpr)
    thresholds = np.concatenate([per_image_thresholds(s, z_star) for s in fused_batches(layer_maps, w, size)])
    spread_vars = {f"spread_{l}": ((f"channel_{l}",), spreads[l]) for l in layers}
    ds = build_dataset(tree, "paired", syn, layer_maps, w, size, thresholds, fpr,
                       calibration="per image: threshold = median + z* x MAD of the image's score; z* = "
                                   "1 - fpr quantile of the same standardised score on real images paired "
                                   "with themselves moved by one input pixel (1/stride of a cell per layer, "
                                   "linear interpolation; along y or along x)",
                       params={"components": {k: v for k, v in comp_w.items()}, "component_scales": scales,
                               "ssim_sigma": SSIM_SIGMA, "drift_removal": "per-channel median of the difference",
                               "null_images": int(null_idx.size), "z_star": z_star},
                       n_img=len(table), extra=spread_vars)
    return Maps("paired", ds, time.perf_counter() - t0)
