"""The maps group of a store, ``/maps/<method>`` (DESIGN.md section 3): fusing layer maps into
the score, building the group's dataset, writing and reading it.

Fusion (every method): every layer map is upsampled bilinearly to the network input size
(root attribute ``input_size``, ``align_corners=False`` as torchvision resizes) and the fused
``score`` is the weighted mean of the layer maps (:func:`fuse`). The weighted layer maps at their
own resolution are stored as ``layer_<name>`` variables: their upsampled sum is ``score``, which
makes the attribution of a region to layers exact (:mod:`fakesegment_nb.segments`).

Memory: a method holds its layer maps (on their own grids, a few kB per image) and its fitted
state; ``score`` and ``mask`` at input resolution (~0.5 GB per 1,000 images) are never held whole.
:func:`build_dataset` defines them as dask arrays of :data:`SCORE_BATCH` images, fused from the layer
maps when read; :func:`write_maps` writes them a batch at a time, into a group that stays out of
the store's consolidated snapshot until it is complete; thresholds calibrated on full-resolution
scores see them batch by batch too (:func:`fused_batches`,
:func:`fakesegment_nb.calibration.calibrate_batches`).

Layout (no ``image`` coordinate of its own: it inherits the root's):

``score``      (image, y, x) float32 at input resolution, NaN where the method does not apply
               (``paired``: real images and unpaired synthetic images);
``mask``       (image, y, x) bool, ``score > threshold``;
``threshold``  (image,) float64, the mask threshold of each image (NaN where not scored);
``layer_<name>``  (image, ``y_<name>``, ``x_<name>``) float32 weighted layer maps (memory bank:
               each layer's share of the squared distance, on the bank's grid);
the fitted state, reused by :func:`fakesegment_nb.segments.attribute` instead of refitting:
``spread_<name>``  (``channel_<name>``,) float32 (``paired``) the real spread features were divided by;
``mean_<name>``, ``precision_<name>``  (fold, ``channel_<name>`` [, ``channel2_<name>``]) float64
               (``reference``, Gaussian) each fold's fitted Gaussian;
``bank``, ``bank_scale``  (``reference``, memory bank) (fold, bank_patch, bank_feature) float32 the
               fitted banks (NaN rows pad the smaller) and (fold, bank_feature) the feature scales;
``location_scale``  (``reference``, memory bank with ``location``) (image, ``y_<grid>``, ``x_<grid>``)
               float32 each image's per-location divisor (the real images' median there);
``reference_fold``  (``reference``) (image,) int8 the fold whose bank (or Gaussian) scored each image;
``set_bank``   (``reference``, memory bank with ``set_novelty``) (``reference_set``, fold,
               ``set_bank_patch``, ``bank_feature``) float32 each set's two banks (NaN rows pad),
               with ``set_scale``, ``set_weight`` (``reference_set``,) float64 the divisor of ``S``
               and the exponent ``a`` (0: the set's reference is not used), in the order of
               ``params["sets"]``;
``domain_coef``, ``domain_centre``  (``domain``) (``domain_set``, fold, ``domain_feature``) float32
               each set's and fold's classifier: the weights on the raw patch features and the mean
               real training patch (NaN rows pad sets with fewer folds), sets in the order of
               ``params["sets"]``;
``domain_fold``  (``domain``) (``domain_set``, image) int16 the fold whose classifier scored each
               image in each set's fit (-1: not in that fit);
attributes ``method``, ``layers``, ``layer_weights`` (JSON), ``fpr``, ``calibration`` (text),
``params`` (JSON: components, scales, ``z_star``, ...), ``input_size``, ``fakesegment_nb``.
Maps written before the fitted state was stored lack ``spread_*``, ``mean_*`` and ``precision_*``;
they still read, and attribution refits what it needs.
Regions are not stored: :func:`fakesegment_nb.segments.find_regions` derives them from ``mask``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
import zarr

from ..errors import FakesegmentError
from ..targets import store_target
from ..writer import consolidate, rows_view
from .features import as_tree, batches

__all__ = ["SCORE_BATCH", "Maps", "build_dataset", "fuse", "fused_batches", "read_maps", "score_map", "stored_methods",
           "upsample", "write_maps"]

# images whose full-resolution score and mask are computed, and written, at a time
SCORE_BATCH = 16


@dataclass
class Maps:
    """A method's maps before (or after) they are written.

    Attributes
    ----------
    method : "paired", "reference" or "domain".
    dataset : the ``/maps/<method>`` dataset (see the module docstring), with the root's
        ``image`` coordinate attached; ``score`` and ``mask`` are computed when read
        (:func:`build_dataset`), or read lazily from the store once written.
    seconds : wall time of the computation (and of the writing, once written).
    notes : what was skipped, for the user.
    """

    method: str
    dataset: xr.Dataset
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(B, h, w)`` -> ``(B, H, W)`` bilinear (align_corners=False, as torchvision resizes)."""
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[:, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def fuse(layer_maps: dict[str, np.ndarray], w: dict[str, float], size: tuple[int, int]) -> np.ndarray:
    """The weighted mean of the layer maps ``{layer: (B, h_l, w_l)}``, each upsampled to ``size``."""
    total = sum(w[l] for l in layer_maps)
    out = None
    for layer, m in layer_maps.items():
        up = upsample(m, size) * (w[layer] / total)
        out = up if out is None else out + up
    return out


def fused_batches(layer_maps: dict[str, np.ndarray], w: dict[str, float], size: tuple[int, int],
                  rows: np.ndarray | None = None, batch_size: int = SCORE_BATCH):
    """:func:`fuse` of the rows ``rows`` (default: all) of the layer maps, ``batch_size`` rows at a
    time: the fused maps of many images at input resolution without holding them all."""
    n = next(iter(layer_maps.values())).shape[0] if layer_maps else 0
    rows = np.arange(n) if rows is None else np.asarray(rows, int)
    for b in batches(rows.size, batch_size):
        yield fuse({l: m[rows[b]] for l, m in layer_maps.items()}, w, size)


def build_dataset(tree, method, idx, layer_maps, w, size, threshold, fpr, calibration, params,
                  n_img, extra=None) -> xr.Dataset:
    """The ``/maps/<method>`` dataset of the scored images ``idx`` (positions in the root):
    ``layer_maps`` unweighted ``(len(idx), h, w)``, ``threshold`` scalar or per scored image;
    ``extra``: more variables (the fitted state), as xarray ``(dims, values)`` tuples.

    ``score`` (:func:`fuse` of the layer maps) and ``mask`` are dask arrays of :data:`SCORE_BATCH`
    images a chunk, computed when read: at input resolution they are ~0.5 GB per 1,000 images,
    and :func:`write_maps` writes them a batch at a time. ``.load()`` the dataset to keep them.
    """
    from .. import __version__

    thr = np.full(n_img, np.nan, np.float64)
    thr[idx] = threshold
    pos = np.full(n_img, -1)
    pos[idx] = np.arange(len(idx))

    def score_rows(block_info=None):
        start, stop = block_info[None]["array-location"][0]
        out = np.full((stop - start, *size), np.nan, np.float32)
        sel = np.flatnonzero(pos[start:stop] >= 0)
        if sel.size and layer_maps:
            out[sel] = fuse({l: m[pos[start:stop][sel]] for l, m in layer_maps.items()}, w, size)
        return out

    chunks = (tuple(b.stop - b.start for b in batches(n_img, SCORE_BATCH)) or (0,), (size[0],), (size[1],))
    score = da.map_blocks(score_rows, chunks=chunks, dtype=np.float32, name=f"maps-score-{uuid.uuid4().hex}")
    # the mask: score above threshold, False where either is NaN (comparisons with NaN are False)
    mask = score > da.from_array(thr[:, None, None], chunks=(chunks[0], 1, 1))
    total = sum(w[l] for l in layer_maps)
    data = {"score": (("image", "y", "x"), score),
            "mask": (("image", "y", "x"), mask),
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


def write_maps(store, maps: Maps) -> str:
    """Write ``maps`` to ``/maps/<method>`` of ``store`` (replacing earlier maps of that method),
    :data:`SCORE_BATCH` images at a time; returns the store's path or URL.

    The root group is never written; the ``image`` coordinate is inherited from it. Per-image
    variables are chunked by image, the fitted state by fold (or whole).

    Plain ``xr.open_datatree`` readers (the consolidated snapshot) see the earlier maps of the
    method until this starts, then none until the new group is complete: the earlier group is
    deleted and the snapshot published without it; the new group is created with no images
    (a group with fewer images than the root is left out of every snapshot,
    :mod:`fakesegment_nb.snapshot`), its rows are written past that shape, batch by batch
    (:func:`fakesegment_nb.writer.rows_view`), and only then does every per-image array take the
    root's length and the snapshot include it. A run that dies on the way leaves the group with
    no images, out of sight, until the next run replaces it.
    """
    path = store.encoding.get("source") if isinstance(store, xr.DataTree) else store
    if path is None:
        raise FakesegmentError("write_maps needs the store's path or URL, not an opened tree")
    path = str(path)
    ds = maps.dataset.drop_vars("image")
    n = ds.sizes.get("image", 0)
    name = f"maps/{maps.method}"
    encoding = {k: {"chunks": tuple(max(1, c) for c in ((1, *ds[k].shape[1:]) if ds[k].dims[0] in ("image", "fold")
                                                         else ds[k].shape))}
                for k in ds.data_vars}
    zstore = store_target(path).zarr_store
    root = zarr.open_group(zstore, mode="a", zarr_format=3, use_consolidated=False)
    if "maps" in root and maps.method in root["maps"]:
        del root["maps"][maps.method]
        consolidate(path)
    per_image = [k for k in ds.data_vars if "image" in ds[k].dims]
    ds.isel(image=slice(0, 0)).compute().to_zarr(path, group=name, mode="w", consolidated=False, zarr_format=3,
                                                 encoding=encoding)
    arrays = {k: zarr.open_array(zstore, path=f"{name}/{k}", mode="r+", zarr_format=3) for k in per_image}
    axis = {k: ds[k].dims.index("image") for k in per_image}
    views = {k: rows_view(a, n, axis[k]) for k, a in arrays.items()}
    for b in batches(n, SCORE_BATCH):
        part = ds[per_image].isel(image=b)
        # one compute: the mask reuses the batch's score
        values = dask.compute(*(part[k].data for k in per_image), scheduler="synchronous")
        for k, v in zip(per_image, values):
            views[k][(slice(None),) * axis[k] + (b,)] = v
    for k, a in arrays.items():
        a.resize(tuple(n if i == axis[k] else s for i, s in enumerate(a.shape)))
    consolidate(path)  # plain xr.open_datatree users see the new group at once
    return path


def read_maps(store, method: str) -> xr.Dataset:
    """The stored ``/maps/<method>`` dataset (lazy), with the root's ``image`` coordinate.

    Raises
    ------
    FakesegmentError
        The store has no maps of that method (run ``fakesegment maps``).
    """
    tree = as_tree(store)
    if "maps" not in tree.children or method not in tree["maps"].children:
        have = list(tree["maps"].children) if "maps" in tree.children else []
        raise FakesegmentError(f"the store has no {method} maps"
                               + (f" (it has {', '.join(have)})" if have else "")
                               + f"; run `fakesegment maps --store ... --method {method}` first")
    return tree["maps"][method].to_dataset()


def stored_methods(store) -> list[str]:
    """Methods whose maps the store holds."""
    tree = as_tree(store)
    return list(tree["maps"].children) if "maps" in tree.children else []


def score_map(store, image: str, method: str = "paired") -> np.ndarray:
    """One image's fused score ``(H, W)`` at input resolution (NaN if the method skips it)."""
    ds = read_maps(store, method)
    try:
        return np.asarray(ds["score"].sel(image=image).values, np.float32)
    except KeyError:
        raise FakesegmentError(f"the store has no image {image!r}") from None
