"""One layer's statistics in one pass over a feature store: the rows :mod:`fakesegment_nb.stats`
assembles into its tables.

Dask block reductions over the layer's chunks (per-image channel means, fraction active,
non-finite images, the within-image scatter of the per-location vectors, and the mse / ssim /
cosine of pairs), in blocks of about :data:`BLOCK_BYTES`, the real images' once; then, from the
per-image vectors, for each synthetic set against all the real images: the layer's ``fid``,
``kid``, ``patch_fd``, its gap (:func:`fakesegment_nb.gap.layer_gap`), the per-image realism
scores and the channel rows.
"""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pandas as pd

from .gap import fid_floor, layer_gap
from .metrics import cohens_d, fid, frechet_from_moments, kid
from .realism import realism_scores
from .store import feature_layer

__all__ = ["layer_stats", "BLOCK_BYTES"]

BLOCK_BYTES = 8 * 2**20  # float64 bytes of one block of images handed to a task


# --------------------------------------------------------------------------------------------
# block functions (run in dask tasks; module level so distributed workers can import them)


def _block_vectors(block: np.ndarray) -> np.ndarray:
    """(k, C, h, w) float16 -> (k, C) float64 means over y, x."""
    return block.astype(np.float64).mean(axis=(2, 3))


def _block_active(block: np.ndarray) -> np.ndarray:
    """(k, C, h, w) -> (k, C) fraction of positive values."""
    return (block > 0).mean(axis=(2, 3), dtype=np.float64)


def _block_nonfinite(block: np.ndarray) -> np.ndarray:
    """(k, C, h, w) -> (k,) 1.0 where an image holds NaN or inf."""
    return (~np.isfinite(block)).any(axis=(1, 2, 3)).astype(np.float64)


def _block_scatter(block: np.ndarray) -> np.ndarray:
    """(k, C, h, w) -> (1, C, C): sum over the k images of the within-image scatter matrix
    ``sum_loc (x - m_i)(x - m_i)^T`` of the per-location vectors."""
    k, c = block.shape[:2]
    out = np.zeros((1, c, c))
    with np.errstate(all="ignore"):
        for i in range(k):
            x = block[i].reshape(c, -1).astype(np.float64)
            x -= x.mean(axis=1, keepdims=True)
            out[0] += x @ x.T
    return out


def _block_pairs(syn: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Aligned (k, C, h, w) blocks -> (k, 3): mse, ssim, cosine per pair."""
    import torch  # imported only where SSIM is computed

    from .ssim import feature_ssim

    a, b = syn.astype(np.float64), real.astype(np.float64)
    with np.errstate(all="ignore"):
        mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
        dot = (a * b).sum(axis=(1, 2, 3))
        norms = np.sqrt((a * a).sum(axis=(1, 2, 3)) * (b * b).sum(axis=(1, 2, 3)))
        cosine = np.where(norms > 0, dot / norms, np.nan)
    # SSIM in float32 (the stored float16 values convert exactly), on centred maps (see
    # ssim._ssim_block): within 1e-7 of skimage's float64 result, 2-3x faster than float64
    ssim = feature_ssim(torch.from_numpy(syn.astype(np.float32)), torch.from_numpy(real.astype(np.float32)))
    return np.stack([mse, ssim.double().numpy(), cosine], axis=1)


# --------------------------------------------------------------------------------------------
# one layer


def _block_size(c: int, h: int, w: int) -> int:
    return max(1, int(BLOCK_BYTES // max(1, c * h * w * 8)))


def _dask_features(tree, layer: str) -> da.Array:
    arr = feature_layer(tree, layer)
    if arr.chunks is None:
        arr = arr.chunk({"image": 1})
    return arr.data


def _domain_parts(feats: da.Array, idx: np.ndarray, k: int) -> dict:
    c = feats.shape[1]
    x = feats[idx].rechunk({0: k, 1: -1, 2: -1, 3: -1})
    nblocks = len(x.chunks[0])
    scatter = x.map_blocks(_block_scatter, dtype=np.float64, drop_axis=3,
                           chunks=((1,) * nblocks, (c,), (c,)))
    return {"vectors": x.map_blocks(_block_vectors, dtype=np.float64, drop_axis=[2, 3]),
            "active": x.map_blocks(_block_active, dtype=np.float64, drop_axis=[2, 3]),
            "nonfinite": x.map_blocks(_block_nonfinite, dtype=np.float64, drop_axis=[1, 2, 3]),
            "scatter": scatter.sum(axis=0, split_every=4)}


def _pair_part(feats: da.Array, syn_idx: np.ndarray, real_idx: np.ndarray, k: int) -> da.Array:
    chunks = {0: k, 1: -1, 2: -1, 3: -1}
    s = feats[syn_idx].rechunk(chunks)
    r = feats[real_idx].rechunk(chunks)
    return da.map_blocks(_block_pairs, s, r, dtype=np.float64, drop_axis=[2, 3],
                         chunks=(s.chunks[0], (3,)))


def _patch_fd(vr, sr, vs, ss, hw: int) -> float:
    """Fréchet distance of per-location vectors from per-image means and within scatters."""
    if hw == 1:  # one location per image: the per-location vectors are the per-image ones
        return fid(vr, vs)

    def moments(v, scatter):
        n_loc = len(v) * hw
        if n_loc < 2:
            return None
        mu = v.mean(axis=0)
        dev = v - mu
        return mu, (scatter + hw * dev.T @ dev) / (n_loc - 1)

    a, b = moments(vr, sr), moments(vs, ss)
    if a is None or b is None:
        return float("nan")
    return frechet_from_moments(*a, *b)


def layer_stats(tree, layer: str, real: np.ndarray, sets: dict[str, np.ndarray],
                pairs: tuple[np.ndarray, np.ndarray], want: set) -> dict:
    """One pass over ``layer`` of the store ``tree`` for the tables named in ``want``.

    ``real``: the store positions of the real images; ``sets``: per synthetic set, the store
    positions of its images; ``pairs``: the store positions of (synthetic image, its real
    partner), as :func:`fakesegment_nb.store.partners` gives them, for the pairs to measure.
    The real images are read once whatever the number of sets; each set is compared with all of
    them, and its figures are those of a store that holds that set alone (the same functions on
    the same vectors, seeded alike).

    Returns ``channels, height, width``, ``pairs`` when asked for (``(n_pairs, 3)``: mse, ssim,
    cosine) and ``sets``: per set, as asked, ``layer_row`` (a dict of ``layers.csv`` columns),
    ``gap_row``, ``channel_rows`` (a DataFrame) and ``scores`` (one per image of the set).
    """
    feats = _dask_features(tree, layer)
    _, c, h, w = feats.shape
    k = _block_size(c, h, w)
    todo = {}
    if want & {"layers", "channels", "images", "gap"}:
        todo["real"] = _domain_parts(feats, real, k)
        todo["sets"] = {name: _domain_parts(feats, idx, k) for name, idx in sets.items()}
    if "pairs" in want and len(pairs[0]):
        todo["pairs"] = _pair_part(feats, *pairs, max(1, k // 2))
    (res,) = dask.compute(todo)
    out = {"channels": c, "height": h, "width": w, "sets": {}}
    if "pairs" in res:
        out["pairs"] = res["pairs"]
    if "real" not in res:
        return out
    r = res["real"]
    bad_real = int(r["nonfinite"].sum())
    bad = {name: bad_real + int(s["nonfinite"].sum()) for name, s in res["sets"].items()}
    total = bad_real + sum(n - bad_real for n in bad.values())
    if total:
        warnings.warn(f"layer {layer}: {total} images hold NaN or inf features (float16 overflow?); "
                      "their fid, kid and patch_fd are NaN", RuntimeWarning, stacklevel=3)
    # the noise floor compares halves of the real images: one for every set
    floor = fid_floor(r["vectors"]) if want & {"layers", "gap"} else None
    pos_r = {g: i for i, g in enumerate(real)}
    for name, idx in sets.items():
        # pairs as rows of the real / the set's vectors: the gap's folds, bootstrap and scores keep twins together
        pos_s = {g: i for i, g in enumerate(idx)}
        pair_of = np.full(len(idx), -1)
        for i_syn, i_real in zip(*pairs):
            if i_syn in pos_s:
                pair_of[pos_s[i_syn]] = pos_r[i_real]
        out["sets"][name] = _set_stats(layer, r, res["sets"][name], pair_of, bad[name], floor, want, (c, h, w))
    return out


def _set_stats(layer: str, r: dict, s: dict, pair_of: np.ndarray, nonfinite: int, floor, want: set,
               shape: tuple[int, int, int]) -> dict:
    """The rows of one set from the reductions of the real images (``r``) and of the set's (``s``)."""
    c, h, w = shape
    vr, vs = r["vectors"], s["vectors"]
    nan = float("nan")
    fid_value = nan if nonfinite else fid(vr, vs)
    out = {"layer_row": {"layer": layer, "fid": fid_value,
                         "kid": nan if nonfinite else kid(vr, vs),
                         "patch_fd": nan if nonfinite else _patch_fd(vr, r["scatter"], vs, s["scatter"], h * w),
                         "n_real": len(vr), "n_synthetic": len(vs), "channels": c, "height": h,
                         "width": w, "n_nonfinite": nonfinite}}
    if want & {"layers", "gap"}:
        gap = layer_gap(vr, vs, fid_value, pair_of=pair_of, scores=False, floor=floor)  # NaN + note if degenerate
        out["layer_row"].update(gap.columns)
        out["gap_row"] = {"layer": layer, **gap.extra}
    if "images" in want:
        out["scores"], _ = realism_scores(vr, vs, pair_of=pair_of)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["channel_rows"] = pd.DataFrame({
            "layer": layer, "channel": np.arange(c),
            "mean_real": vr.mean(axis=0), "std_real": vr.std(axis=0, ddof=1),
            "mean_synthetic": vs.mean(axis=0), "std_synthetic": vs.std(axis=0, ddof=1),
            "active_real": r["active"].mean(axis=0), "active_synthetic": s["active"].mean(axis=0),
            "effect_size": cohens_d(vr, vs, axis=0)})
    return out
