"""The second reference of the ``reference`` maps: the image's own synthetic set.

A genuine render differs from photos globally (tone, noise, texture, materials) and locally. Its
distance to the real memory bank (:mod:`.memory_bank`) is high nearly everywhere, so that distance
alone says "everywhere". The set's other renders share the global look, so the distance to *their*
patches is low wherever the render is typical of its set and high where a detail is unusual even
for a render like this. The ``reference`` score of a synthetic image is a weighted geometric mean
of the two novelties, each in units of its own typical value::

    score = R^(1 - a) S^a    R: distance to the real bank, 1 = typical of a real location
                             S: distance to the set's other images, 1 = typical of the set

(a weighted mean of the two log-novelties: a location must be unusual for both references to score
high; ``a = clip(1 - c, 0, 1)`` from the set's coherence ``c``, below, and 0 under
:data:`MIN_SET_WEIGHT`).
For a real image the two references are one, the real images, so its score is ``R`` -- the scores
the mask threshold is calibrated on, exactly as without the set's reference.

``S`` is the squared distance of each location to the nearest patch of the set's *other* synthetic
images (leave one out: :func:`set_distances`; every patch kept, no coreset and no density step, so a
detail that recurs in several renders is still matched by its own kind and one that no other render
has stays far), in the real bank's feature scales so both distances are in one metric, and divided by
its median over the set's locations. A set of more than ``set_images + 1`` images compares each image
with ``set_images`` of a fixed seeded sample (:func:`set_reference`), so time grows linearly with the
set. A set with fewer than two synthetic images has no second reference: its score is ``R``.

The set's coherence ``c`` (which sets the exponent ``a``) is estimated with coreset banks of each fold
of the set (:func:`fit_set_bank`, :func:`set_bank_folds`; stored as ``set_bank``): the median
squared distance of at most :data:`COHERENCE_IMAGES` images per fold to the set bank that does not
hold them over that to the real bank.

With ``set_location`` (efficientnet_lite0's default) the set's layout is a reference too: a synthetic
image's score at each location is divided by ``(m / M)^a``, ``m`` the median score of the set's
*other* images at that location and ``M`` the set's median (``reference.location_median``, leaving
the image out; the divisor is stored as ``set_location_scale``), as the real images' location
step does for the real reference: renders of one scene put their lights and shelves in the same
places. A set of fewer than three images skips it.

Attribution stays exact: with ``r_c``, ``s_c`` the channels' shares of ``R`` and ``S`` at a location
(:func:`~.memory_bank.bank_distances` splits a squared distance by feature), the score is
``sum_c score * ((1 - a) r_c / R + a s_c / S)`` (:func:`geometric_shares`).

Measured (efficientnet_lite0, ImageNet weights; pixel AUROC / AP, see :mod:`.settings`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .features import batches
from .memory_bank import MemoryBank, bank_distances, fit_bank, nearest_patches, patch_rows, smooth_cells

# images per fold whose raw distances estimate a set's coherence
COHERENCE_IMAGES = 16
# the least exponent ``a`` worth the set's reference: below it ``a`` is 0 and S is not computed. S costs
# a nearest-patch search over ``set_images`` whole images per synthetic image (the probe's 50 renders
# of unrelated photos, c 0.989: 36 s against 8 s), and there it moved nothing (probe seeds 0 and 2:
# pixel AUROC / AP identical to the third decimal with a = 0.011 and a = 0). The genuine renders' sets
# sit far above it (warehouse: randomised a 0.12, photoreal 0.47).
MIN_SET_WEIGHT = 0.05

__all__ = ["COHERENCE_IMAGES", "MIN_SET_WEIGHT", "set_exponent", "fit_set_bank", "geometric_shares", "others", "raw_distances", "set_bank_folds", "set_distances",
           "set_members", "set_reference", "smooth_all"]


def set_exponent(coherence: float) -> float:
    """The set reference's exponent ``a`` from the set's coherence ``c``: ``clip(1 - c, 0, 1)``, and 0
    when that is under :data:`MIN_SET_WEIGHT` or ``c`` is not finite (no second reference)."""
    a = float(np.clip(1.0 - coherence, 0.0, 1.0)) if np.isfinite(coherence) else 0.0
    return a if a >= MIN_SET_WEIGHT else 0.0


def set_bank_folds(model_of: np.ndarray, syn_idx: np.ndarray) -> dict[int, np.ndarray]:
    """The images of each fold's set bank: bank ``k`` holds the set's synthetic images that fold
    ``1 - k``'s real bank scores, so an image scored by fold ``k`` is never in set bank ``k``."""
    return {k: syn_idx[model_of[syn_idx] == 1 - k] for k in (0, 1)}


def fit_set_bank(tree, layers: list[str], idx: np.ndarray, scale: np.ndarray, grid: tuple[int, int],
                 bank_params: dict, batch_size: int = 16) -> MemoryBank:
    """A memory bank of the synthetic images ``idx`` with the real bank's feature ``scale``
    (:func:`~.memory_bank.fit_bank`, the same pool, centring, candidates, coreset and seed)."""
    scale_t = torch.from_numpy(scale)
    pool, centre = int(bank_params["pool"]), bool(bank_params["centre"])

    def patches():
        for b in batches(idx.size, batch_size):
            yield patch_rows(tree, layers, idx[b], scale_t, grid, pool, centre)

    slices, start = {}, 0
    for l in layers:
        c = tree["layers"][l]["features"].shape[1]
        slices[l] = (start, start + c)
        start += c
    return fit_bank(patches(), int(idx.size), scale, slices, ratio=bank_params["ratio"],
                    max_size=bank_params["max_size"], max_candidates=bank_params["max_candidates"],
                    projection=bank_params["projection"], seed=bank_params["seed"])


def set_reference(members: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """The images of a set that its synthetic images are compared with: all ``members`` when they are
    at most ``limit + 1``, else a seeded random ``limit + 1`` of them, the same for every image (each
    image then leaves itself out: :func:`others`)."""
    if members.size <= limit + 1:
        return np.asarray(members)
    return np.sort(np.random.default_rng([int(seed), 17]).choice(members, limit + 1, replace=False))


def others(reference: np.ndarray, image: int, limit: int) -> np.ndarray:
    """Positions in ``reference`` of the images ``image`` is compared with: every one but itself, at
    most ``limit``."""
    return np.flatnonzero(reference != image)[:limit]


def set_distances(tree, layers: list[str], rows: np.ndarray, targets: np.ndarray, reference: np.ndarray,
                  scale: np.ndarray, slices: dict[str, tuple[int, int]], grid: tuple[int, int], bp: dict,
                  w: dict[str, float], out: dict[str, np.ndarray], batch_size: int = 16) -> None:
    """Fill ``out[layer][rows]`` with each layer's share of the squared distance of every location of
    the images ``targets[rows]`` to the nearest patch of their set's *other* images (``reference``
    less the image itself, at most ``bp["set_images"]``; patches scaled by the real bank's ``scale``,
    every patch kept: no coreset, no density step), undone from the layer's fusion weight (as the real
    bank's layer maps are)."""
    scale_t = torch.from_numpy(scale)
    pool, centre, limit = int(bp["pool"]), bool(bp["centre"]), int(bp["set_images"])
    ref = patch_rows(tree, layers, reference, scale_t, grid, pool, centre)
    total = sum(w[l] for l in layers)
    for b in batches(rows.size, batch_size):
        r = rows[b]
        q = patch_rows(tree, layers, targets[r], scale_t, grid, pool, centre)
        for j, row in enumerate(r):
            diff = bank_distances(q[j], ref[others(reference, int(targets[row]), limit)].reshape(-1, q.shape[2]))
            for l, (a, z) in slices.items():
                out[l][row] = (diff[:, a:z].sum(1) * (total / w[l])).reshape(*grid).numpy()


def raw_distances(tree, layers: list[str], idx: np.ndarray, bank: MemoryBank, grid: tuple[int, int],
                  bank_params: dict) -> np.ndarray:
    """The squared distance of every location of the images ``idx`` to its nearest row of ``bank``
    (no density normalisation): ``(len(idx) * cells,)``."""
    q = patch_rows(tree, layers, idx, torch.from_numpy(bank.scale), grid, int(bank_params["pool"]),
                   bool(bank_params["centre"])).flatten(0, 1)
    b = torch.from_numpy(bank.bank)
    return ((q - b[nearest_patches(q, b)]) ** 2).sum(1).numpy()


def geometric_shares(real: dict[str, np.ndarray], own: dict[str, np.ndarray], w: dict[str, float], a: float = 0.5,
                     eps: float = 1e-12) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Layer maps of ``R^(1 - a) S^a`` from the layer maps of the two novelties (each ``(B, h, w)``,
    undone from the fusion weight as :func:`~.group.fuse` takes them): ``R = sum_l w_l / W r_l``,
    likewise ``S``; layer ``l``'s map is ``score ((1 - a) r_l / R + a s_l / S)``, so the weighted maps
    still fuse to the score. Returns ``(layer maps, score)``."""
    total = sum(w[l] for l in real)
    r = np.clip(sum(real[l] * (w[l] / total) for l in real), 0, None)
    s = np.clip(sum(own[l] * (w[l] / total) for l in own), 0, None)
    score = r ** (1 - a) * s ** a
    rr, ss = np.maximum(r, eps), np.maximum(s, eps)
    return {l: score * ((1 - a) * real[l] / rr + a * own[l] / ss) for l in real}, score


def smooth_all(maps: dict[str, np.ndarray], sigma: float) -> dict[str, np.ndarray]:
    """Every layer map smoothed by :func:`~.memory_bank.smooth_cells`."""
    return {l: smooth_cells(m, sigma) for l, m in maps.items()}


def set_members(sets: np.ndarray, table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Positions of each set's synthetic images."""
    dom = table["domain"].to_numpy()
    names = list(dict.fromkeys(sets[dom == "synthetic"]))
    return {s: np.flatnonzero((sets == s) & (dom == "synthetic")) for s in names}
