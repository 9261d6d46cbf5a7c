"""FakeSegments: connected regions of a stored mask, and which layers / channels drive them.

Regions are computed on demand from ``/maps/<method>/mask`` (nothing extra is stored): the
8-connected components of an image's mask at the network input resolution, smallest ones
(``min_area``) dropped. Boxes are ``y0, x0, y1, x1`` in input pixels, end exclusive.

Attribution is additive. The fused score is the sum of the upsampled weighted layer maps
(``layer_<name>`` variables), so a region's mean score splits exactly into one contribution
per layer. Within a layer, the layer map is a mean over channels of per-channel terms, so the
layer's contribution splits (up to the bilinear upsampling) into per-channel contributions:

* ``paired``: ``w_l * sum_k cw_k / scale_k * term_k,c / n_k`` with ``term_sq,c`` the squared,
  drift-removed, spread-normalised difference (``n_sq = C``) and ``term_ssim,c`` = 1 - SSIM of
  channel ``c`` (``n_ssim`` the channels with a range, the others count 0), averaged over the
  region's cells (cells weighted by how much of them the region covers); the terms are the maps'
  own (:func:`fakesegment_nb.maps.paired.paired_terms`), with the spread the maps used;
* ``domain``: the classifier's logit is linear in the patch features, so the score is exactly
  ``sum_c w_c (x_c - m_c)`` over the layers' channels (smoothed, a linear filter), with the stored
  weights and mean real patch of the classifier that scored the image (its set and fold);
* ``reference``: the squared Mahalanobis distance ``v' P v = sum_c v_c (P v)_c`` split by
  channel (a channel may contribute negatively), with the same fold's Gaussian as the map; with
  the memory bank, the squared distance to the nearest bank patch ``sum_c (q_c - b_c)^2`` split
  by channel, with the stored bank of the same fold.

The fitted state (spread, Gaussians, banks, domain classifiers) is read from the maps group; maps written before it
was stored get it refitted as the maps fitted it.

Channels are the stored ``channel`` indices of ``layers/<name>/features``: open them with
:func:`fakesegment_nb.store.feature_map`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .errors import FakesegmentError
from .maps import as_tree, fold_models, input_size, read_maps, upsample
from .maps.features import centre, read_features
from .maps.gaussian import mahalanobis_terms
from .maps.domain import domain_patches, domain_terms
from .maps.features import set_of_images
from .maps.memory_bank import bank_distances, bank_spread, patch_rows, smooth_cells
from .maps.set_novelty import others, set_members, set_reference
from .maps.paired import components_used, paired_spreads, paired_terms
from .maps.reference import layer_gaussian
from .maps.settings import PAIRED_COMPONENTS
from .store import image_table, partners

__all__ = ["REGION_COLUMNS", "Attribution", "attribute", "find_regions", "region_mask"]

REGION_COLUMNS = ["image", "region", "y0", "x0", "y1", "x1", "area", "mean_score", "max_score",
                  "layer", "layer_share"]


def _image_pos(ds, image: str) -> int:
    ids = [str(v) for v in ds["image"].values]
    try:
        return ids.index(image)
    except ValueError:
        raise FakesegmentError(f"the store has no image {image!r}") from None


def _layer_names(ds) -> list[str]:
    return [str(v)[len("layer_"):] for v in ds.data_vars if str(v).startswith("layer_")]


def _layer_up(ds, pos: int, size) -> dict[str, np.ndarray]:
    return {l: upsample(np.asarray(ds[f"layer_{l}"].variable[pos].values, np.float32)[None], size)[0]
            for l in _layer_names(ds)}


def find_regions(store, method: str = "paired", images: list[str] | str | None = None,
                 min_area: int = 16) -> pd.DataFrame:
    """Connected regions of the calibrated masks.

    Parameters
    ----------
    store : feature store path or open tree, with maps of ``method``.
    method : "paired", "reference" or "domain".
    images : one id, a list of ids, or None for every *synthetic* image the method scored
        (the reference method also scores real images; ask for them by id).
    min_area : regions with fewer pixels (input resolution) are dropped.

    Returns
    -------
    DataFrame with :data:`REGION_COLUMNS`: ``region`` numbers regions 1.. per image by
    decreasing mean score; ``layer`` is the layer contributing most to the region's mean score
    and ``layer_share`` its share of that score.
    """
    from scipy import ndimage as ndi

    tree = as_tree(store)
    ds = read_maps(tree, method)
    size = input_size(tree)
    ids = [str(v) for v in ds["image"].values]
    if images is None:
        thr = np.asarray(ds["threshold"].values)
        dom = image_table(tree)["domain"].reindex(ids).to_numpy()
        sel = [i for i, t, d in zip(ids, thr, dom) if np.isfinite(t) and d == "synthetic"]
    else:
        sel = [images] if isinstance(images, str) else list(images)
    rows = []
    for img in sel:
        pos = _image_pos(ds, img)
        mask = np.asarray(ds["mask"].variable[pos].values, bool)
        if not mask.any():
            continue
        score = np.asarray(ds["score"].variable[pos].values, np.float32)
        lab, n = ndi.label(mask, structure=np.ones((3, 3)))
        if n == 0:
            continue
        ups = _layer_up(ds, pos, size)
        found = []
        for k, sl in enumerate(ndi.find_objects(lab), start=1):
            reg = lab[sl] == k
            area = int(reg.sum())
            if area < min_area:
                continue
            s = score[sl][reg]
            contrib = {l: float(u[sl][reg].mean()) for l, u in ups.items()}
            top = max(contrib, key=contrib.get)
            total = sum(contrib.values())
            found.append({"image": img, "y0": sl[0].start, "x0": sl[1].start, "y1": sl[0].stop,
                          "x1": sl[1].stop, "area": area, "mean_score": float(s.mean()),
                          "max_score": float(s.max()), "layer": top,
                          "layer_share": contrib[top] / total if total > 0 else np.nan})
        found.sort(key=lambda r: -r["mean_score"])
        for k, r in enumerate(found, start=1):
            rows.append({**r, "region": k})
    return pd.DataFrame(rows, columns=REGION_COLUMNS)


def region_mask(store, image: str, region: int | None = None, box=None, method: str = "paired") -> np.ndarray:
    """A boolean ``(H, W)`` input-resolution mask: a numbered region of :func:`find_regions`
    (its pixels, not its box) or a box ``(y0, x0, y1, x1)``."""
    tree = as_tree(store)
    size = input_size(tree)
    if box is not None:
        y0, x0, y1, x1 = (int(v) for v in box)
        if not (0 <= y0 < y1 <= size[0] and 0 <= x0 < x1 <= size[1]):
            raise FakesegmentError(f"box {tuple(box)} is not inside the {size[1]}x{size[0]} network input")
        m = np.zeros(size, bool)
        m[y0:y1, x0:x1] = True
        return m
    if region is None:
        raise FakesegmentError("give a region number or a box")
    from scipy import ndimage as ndi

    regs = find_regions(tree, method, image)
    row = regs[regs["region"] == int(region)]
    if row.empty:
        raise FakesegmentError(f"{image} has no region {region} in its {method} mask "
                               f"({len(regs)} regions)")
    r = row.iloc[0]
    ds = read_maps(tree, method)
    mask = np.asarray(ds["mask"].variable[_image_pos(ds, image)].values, bool)
    lab, _ = ndi.label(mask, structure=np.ones((3, 3)))
    sub = lab[r.y0:r.y1, r.x0:r.x1]
    ids, counts = np.unique(sub[sub > 0], return_counts=True)
    out = np.zeros(size, bool)
    out[lab == ids[np.argmax(counts)]] = True
    return out


@dataclass
class Attribution:
    """What drives a region's score.

    Attributes
    ----------
    layers : DataFrame ``layer, contribution, share`` (contributions sum to ``score``).
    channels : DataFrame ``layer, channel, contribution, share`` -- the ``top`` channels of
        every weighted layer, by contribution; ``share`` is of the region's score.
    score : the region's mean fused score.
    """

    layers: pd.DataFrame
    channels: pd.DataFrame
    score: float


def _cell_weights(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Fraction of each cell of an ``(h, w)`` grid that the input-resolution mask covers."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.nn.functional.adaptive_avg_pool2d(t, (h, w))[0, 0].numpy()


def _top(per: np.ndarray, top: int):
    order = np.argsort(-per)[:top]
    return [(ch, per[ch]) for ch in order]


def _stored_bank(ds, var: str, *index) -> torch.Tensor:
    b = np.asarray(ds[var].values[index], np.float32)
    return torch.from_numpy(b[np.isfinite(b).all(1)])


def _bank_terms(tree, ds, params, pos: int, m: np.ndarray) -> dict[str, np.ndarray]:
    """Per layer, per channel: the region's (cell-weighted) share of the score from the stored memory
    bank of the image's fold -- the squared difference to the nearest bank patch, divided by the
    map's location divisor and scale and smoothed as the map was; with the set's own reference
    (:mod:`fakesegment_nb.maps.set_novelty`), the score ``R^(1-a) S^a`` split as
    ``score ((1 - a) r_c / R + a s_c / S)`` -- undone from the layer's fusion weight (so that times
    ``w_l / sum w`` it sums to the layer's share)."""
    if "reference_fold" in ds:
        k = int(ds["reference_fold"].values[pos])
    else:  # maps written before the folds were stored drew a coin for unpaired synthetic images
        k = int(fold_models(image_table(tree), int(params.get("seed", 0)), balanced=False)[1][pos])
    bank = _stored_bank(ds, "bank", k)
    scale = torch.from_numpy(np.asarray(ds["bank_scale"].values[k], np.float32))
    slices = params["slices"]
    layers = list(slices)
    grid = tuple(ds[f"layer_{layers[0]}"].shape[1:])
    bp = params["bank"]
    q = patch_rows(tree, layers, np.array([pos]), scale, grid, int(bp["pool"]), bool(params.get("centre", False)))[0]

    def terms(b, divisor=None, density=int(bp.get("density", 0))):  # (D, h, w) per-channel terms, as computed
        t = bank_distances(q, b, bank_spread(b, density)).numpy()
        if divisor is not None:
            t = t / divisor.reshape(-1, 1)
        return smooth_cells(t.T.reshape(-1, *grid), float(bp.get("smooth", 0.0)))

    loc = np.asarray(ds["location_scale"].values[pos], np.float32) if "location_scale" in ds else None
    r = terms(bank, loc) / params["layer_scales"][layers[0]]
    per_cell = r
    sets = [s_["set"] for s_ in params.get("sets", [])] if "set_weight" in ds else []
    table = image_table(tree)
    image_sets = set_of_images(table)
    own = image_sets[pos]
    if own in sets and float(ds["set_weight"].values[sets.index(own)]) > 0:
        s_ = sets.index(own)
        a = float(ds["set_weight"].values[s_])
        if "set_images" in bp:  # the set's other images (set_novelty.set_distances), read from the store
            ref = set_reference(set_members(image_sets, table)[own], int(bp["set_images"]),
                                int(params.get("seed", 0)))
            near = patch_rows(tree, layers, ref[others(ref, pos, int(bp["set_images"]))], scale, grid,
                              int(bp["pool"]), bool(params.get("centre", False)))
            st = terms(near.flatten(0, 1), density=0)
        else:  # maps written before: the set's stored coreset bank of the other fold
            st = terms(_stored_bank(ds, "set_bank", s_, k))
        st = st / float(ds["set_scale"].values[s_])
        big_r, big_s = np.maximum(r.sum(0), 1e-12), np.maximum(st.sum(0), 1e-12)
        score = np.clip(r.sum(0), 0, None) ** (1 - a) * np.clip(st.sum(0), 0, None) ** a
        per_cell = score[None] * ((1 - a) * r / big_r[None] + a * st / big_s[None])
        if "set_location_scale" in ds:  # the set's own location step (absent in older maps)
            div = np.asarray(ds["set_location_scale"].values[pos], np.float32)
            if np.isfinite(div).all():
                per_cell = per_cell / div[None]
    cw = _cell_weights(m, *grid)
    cw = cw / cw.sum() if cw.sum() > 0 else cw
    per = (per_cell * cw[None]).sum(axis=(1, 2))
    weights = json.loads(ds.attrs["layer_weights"])
    wsum = sum(weights[l] for l in layers)
    return {l: per[a_:z] * (wsum / weights[l]) for l, (a_, z) in slices.items()}


def _domain_terms(tree, ds, params, pos: int, m: np.ndarray) -> dict[str, np.ndarray]:
    """Per layer, per channel: the region's (cell-weighted) share of the domain score, from the
    stored classifier of the image's set and fold (a real image: the first set's)."""
    sets = list(params["sets"])
    own = set_of_images(image_table(tree))[pos]
    s = sets.index(own) if own in sets else 0
    k = int(ds["domain_fold"].values[s, pos])
    slices = params["slices"]
    layers = list(slices)
    grid = tuple(ds[f"layer_{layers[0]}"].shape[1:])
    # maps written before the spreads were features have no "spread" setting: means only
    q = domain_patches(tree, layers, np.array([pos]), grid, int(params["pool"]), bool(params.get("spread", False)))
    t = domain_terms(q, ds["domain_coef"].values[s, k], ds["domain_centre"].values[s, k])[0].numpy()
    t = smooth_cells(t, float(params.get("smooth", 0.0)))
    cw = _cell_weights(m, *grid)
    cw = cw / cw.sum() if cw.sum() > 0 else cw
    per = (t * cw[None]).sum(axis=(1, 2))
    # a channel's share: its mean's term plus (with spreads) its spread's term
    return {l: per[a:z].reshape(-1, tree["layers"][l]["features"].shape[1]).sum(0) for l, (a, z) in slices.items()}


def attribute(store, image: str, region: int | None = None, box=None, method: str = "paired",
              top: int = 10) -> Attribution:
    """Per-layer and per-channel contributions to a region's mean score.

    Parameters
    ----------
    store : feature store path or open tree, with maps of ``method``.
    image : image id (a synthetic image).
    region : region number from :func:`find_regions`, or
    box : ``(y0, x0, y1, x1)`` in input pixels.
    method : "paired", "reference" or "domain".
    top : channels reported per layer.

    Returns
    -------
    Attribution
    """
    tree = as_tree(store)
    ds = read_maps(tree, method)
    size = input_size(tree)
    pos = _image_pos(ds, image)
    if not np.isfinite(float(ds["threshold"].values[pos])):
        raise FakesegmentError(f"the {method} method does not score {image}")
    m = region_mask(tree, image, region=region, box=box, method=method)
    ups = _layer_up(ds, pos, size)
    contrib = {l: float(u[m].mean()) for l, u in ups.items()}
    total = float(np.asarray(ds["score"].variable[pos].values)[m].mean())
    layers = pd.DataFrame({"layer": list(contrib), "contribution": list(contrib.values())})
    layers["share"] = layers["contribution"] / total if total else np.nan
    layers = layers.sort_values("contribution", ascending=False, ignore_index=True)
    weights = json.loads(ds.attrs["layer_weights"])
    params = json.loads(ds.attrs["params"])
    wsum = sum(weights[l] for l in contrib)
    table = image_table(tree)
    rows = []
    bank_terms = (_bank_terms(tree, ds, params, pos, m) if method == "reference"
                  and params.get("distance") == "memory_bank" else None)
    if method == "domain":  # the layer maps are each layer's share already: no fusion weight to undo
        bank_terms = {l: v * (wsum / weights[l]) for l, v in _domain_terms(tree, ds, params, pos, m).items()}
    spreads = paired_spreads(tree, ds) if method == "paired" else None
    for layer in contrib:
        c, h, w = tree["layers"][layer]["features"].shape[1:]
        if bank_terms is not None:
            rows.extend({"layer": layer, "channel": int(ch), "contribution": float(v)}
                        for ch, v in _top(bank_terms[layer] * weights[layer] / wsum, top))
            continue
        cw = _cell_weights(m, h, w)
        cw = cw / cw.sum() if cw.sum() > 0 else cw
        lw = weights[layer] / wsum
        fs = read_features(tree, layer, np.array([pos]))
        if method == "paired":
            found = partners(table).set_index("image")["i_real"]
            if image not in found.index:
                raise FakesegmentError(f"{image}: its real pair {str(table['pair'].iloc[pos])!r} is not in the "
                                       "store; attribute it with method='reference'")
            inv = (1.0 / spreads[layer])[None, :, None, None]
            zs, zr = fs * inv, read_features(tree, layer, np.array([found[image]])) * inv
            use = components_used(params.get("components", PAIRED_COMPONENTS), (h, w))
            ctot = sum(use.values())
            terms = paired_terms(zs, zr, "ssim" in use).channel_terms()
            per = np.zeros(c)
            for k, v in use.items():
                scale = params["component_scales"].get(f"{layer}.{k}", 1.0)
                term, divisor = terms[k]
                per += (v / ctot / scale) * (term[0] * cw[None]).sum(axis=(1, 2)) / int(divisor[0])
        else:
            k = (int(ds["reference_fold"].values[pos]) if "reference_fold" in ds
                 else int(fold_models(table, int(params.get("seed", 0)), balanced=False)[1][pos]))
            g = layer_gaussian(tree, ds, layer, k)
            v = (centre(fs) if bool(params.get("centre", False)) else fs)[0].reshape(c, -1).T
            per = (mahalanobis_terms(v, g) * cw.reshape(-1, 1)).sum(0) / c / params["layer_scales"][layer]
        rows.extend({"layer": layer, "channel": int(ch), "contribution": float(v)} for ch, v in _top(per * lw, top))
    channels = pd.DataFrame(rows, columns=["layer", "channel", "contribution"])
    channels["share"] = channels["contribution"] / total if total else np.nan
    channels = channels.sort_values("contribution", ascending=False, ignore_index=True)
    return Attribution(layers, channels, total)
