"""The ``reference`` method's memory bank (PatchCore, Roth et al., "Towards Total Recall in
Industrial Anomaly Detection", CVPR 2022): locally aware patch features, a greedy coreset of real
patches bounded in size, and the squared distance to the nearest bank patch, as a whole and split by
feature (:func:`bank_distances`).

Fit (:func:`fit_bank`) and distance (:func:`bank_distances`) are pure functions of the patches
they are given; :func:`fit_memory_bank` and :func:`bank_patches` read them from a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FakesegmentError
from ..ssim import gaussian_filter_matrix
from .features import batches, read_features, real_spread
from .features import centre as centre_features

__all__ = ["MemoryBank", "bank_distances", "bank_patches", "bank_spread", "fit_bank", "fit_memory_bank",
           "greedy_coreset", "nearest_patches", "neighbourhood_patches", "patch_rows", "smooth_cells"]


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


def bank_distances(queries: torch.Tensor, bank: torch.Tensor, spread: torch.Tensor | None = None) -> torch.Tensor:
    """The squared distance of every query row ``(N, D)`` to its nearest bank row ``(M, D)``, split
    by feature: ``(N, D)``, summing over a layer's columns gives its share of the distance; divided
    by that bank row's ``spread`` (:func:`bank_spread`) when given."""
    nn = nearest_patches(queries, bank)
    d = (queries - bank[nn]) ** 2
    return d if spread is None else d / spread[nn, None]


def bank_spread(bank: torch.Tensor, density: int) -> torch.Tensor:
    """Each bank row's mean squared distance to its ``density`` nearest other rows, over the median
    of that (ones when ``density`` is 0): a query's squared distance to its nearest row is divided
    by it, so a patch as far from a sparse part of the real patches (texture) as real patches there
    are from each other counts as typical (local-density normalisation as in LOF; Breunig et al.
    2000). The bank is bounded (``max_size``), so this is too."""
    n = bank.shape[0]
    k = min(int(density), n - 1)
    if k < 1:
        return torch.ones(n)
    sq = (bank * bank).sum(1)
    d = (sq[:, None] - 2 * bank @ bank.T + sq[None, :]).clamp_min_(0)
    near = torch.topk(d, k + 1, dim=1, largest=False).values[:, 1:].mean(1)
    near = near / near.median().clamp_min(1e-12)
    return near.clamp_min(1e-3)


def smooth_cells(m: np.ndarray, sigma: float) -> np.ndarray:
    """``(B, h, w)`` maps filtered by a Gaussian of ``sigma`` cells (scipy's reflect border); the
    maps themselves when ``sigma`` is 0. Linear, so layer maps smoothed one by one still add up."""
    if sigma <= 0:
        return m
    t = torch.from_numpy(np.ascontiguousarray(m, np.float32))
    my = gaussian_filter_matrix(m.shape[1], sigma, dtype=torch.float32)
    mx = gaussian_filter_matrix(m.shape[2], sigma, dtype=torch.float32)
    return (my @ t @ mx.T).numpy()


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


def bank_patches(tree, layers: list[str], idx: np.ndarray, scale_t: torch.Tensor, grid: tuple[int, int],
                 pool: int, centre: bool) -> torch.Tensor:
    """Scaled locally aware patches (:func:`neighbourhood_patches` times a bank's ``scale``) of the
    stored images ``idx``: ``(len(idx), D, *grid)``; ``centre``: of the features minus each image's
    per-channel median."""
    feats = {l: torch.from_numpy(centre_features(f) if centre else f) for l in layers
             for f in [read_features(tree, l, idx)]}
    return neighbourhood_patches(feats, grid, pool) * scale_t[None, :, None, None]


def patch_rows(tree, layers: list[str], idx: np.ndarray, scale_t: torch.Tensor, grid: tuple[int, int],
               pool: int, centre: bool) -> torch.Tensor:
    """:func:`bank_patches` as one row per location: ``(len(idx), cells, D)``, cells in row-major
    grid order."""
    p = bank_patches(tree, layers, idx, scale_t, grid, pool, centre)
    return p.permute(0, 2, 3, 1).reshape(p.shape[0], grid[0] * grid[1], -1)


def fit_bank(patches: Iterable[torch.Tensor], n_images: int, scale: np.ndarray, slices: dict[str, tuple[int, int]],
             *, ratio: float = 0.1, max_size: int = 1024, max_candidates: int = 16384, projection: int = 128,
             seed: int = 0) -> MemoryBank:
    """Fit a :class:`MemoryBank` on the scaled patches of ``n_images`` real images, given in batches
    ``(B, cells, D)`` (a pure function of them; ``scale`` and ``slices`` are only recorded).

    Each image gives ``max_candidates // n_images`` of its patches (at least one; a seeded random
    choice), so the candidates never exceed ``max_candidates`` rows whatever the number of
    images; the bank is their greedy coreset (:func:`greedy_coreset`) of
    ``min(max_size, ceil(ratio x patches seen))`` rows.
    """
    rng = np.random.default_rng(seed)
    cand, filled, cells = None, 0, 0
    for p in patches:
        cells = p.shape[1]
        per_image = max(1, min(cells, max_candidates // max(n_images, 1)))
        if cand is None:
            # one array for every image's share, allocated once: a small tensor kept per image,
            # between each batch's large temporaries, fragments the heap (measured: +300 MB of
            # resident memory at 500 real images per fold, benchmarks/bench_maps_all.py)
            cand = torch.empty((n_images * per_image, p.shape[2]), dtype=p.dtype)
        if filled + p.shape[0] * per_image > cand.shape[0]:
            raise FakesegmentError(f"fit_bank was given more than n_images={n_images} images")
        for row in p:
            keep = np.sort(rng.choice(cells, per_image, replace=False)) if per_image < cells else slice(None)
            cand[filled:filled + per_image] = row[keep]
            filled += per_image
    if cand is None:
        raise FakesegmentError("fit_bank was given no patches")
    cand = cand[:filled]
    if cand.shape[0] > max_candidates:  # more images than max_candidates: one patch of some of them
        cand = cand[np.sort(rng.choice(cand.shape[0], max_candidates, replace=False))]
    seen = n_images * cells
    size = int(min(max_size, np.ceil(ratio * seen), cand.shape[0]))
    chosen = greedy_coreset(cand, size, projection=projection, seed=seed)
    return MemoryBank(cand[chosen].numpy().copy(), scale, slices, int(seen), int(cand.shape[0]))


def fit_memory_bank(tree, layers: list[str], idx: np.ndarray, w: dict[str, float], grid: tuple[int, int],
                    pool: int = 3, ratio: float = 0.1, max_size: int = 1024, max_candidates: int = 16384,
                    projection: int = 128, centre: bool = True, seed: int = 0,
                    batch_size: int = 16) -> MemoryBank:
    """Fit a :class:`MemoryBank` on the stored real images ``idx``, bounded in memory
    (:func:`fit_bank` of their patches, read ``batch_size`` images at a time).

    The feature scales are ``sqrt(w_l / sum w / C_l) / sigma_c`` with ``sigma_c`` the spread of the
    images ``idx`` (:func:`~fakesegment_nb.maps.features.real_spread`). ``centre``: features minus
    each image's per-channel median (:func:`~fakesegment_nb.maps.features.centre`), before the
    spread and the patches.
    """
    total = sum(w[l] for l in layers)
    scales, slices, start = [], {}, 0
    for l in layers:
        _, std = real_spread(tree, l, idx, np.random.default_rng(seed), centre_features=centre)
        scales.append(np.sqrt(w[l] / total / std.size) / std)
        slices[l] = (start, start + std.size)
        start += std.size
    scale = np.concatenate(scales).astype(np.float32)
    scale_t = torch.from_numpy(scale)

    def patches():
        for b in batches(idx.size, batch_size):
            yield patch_rows(tree, layers, idx[b], scale_t, grid, pool, centre)

    return fit_bank(patches(), int(idx.size), scale, slices, ratio=ratio, max_size=max_size,
                    max_candidates=max_candidates, projection=projection, seed=seed)
