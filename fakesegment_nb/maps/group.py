"""The maps group of a store, ``/maps/<method>`` (DESIGN.md section 3): fusing layer maps into
the score, building the group's dataset, writing and reading it.

Fusion (every method): every layer map is upsampled bilinearly to the network input size
(root attribute ``input_size``, ``align_corners=False`` as torchvision resizes) and the fused
``score`` is the weighted mean of the layer maps (:func:`fuse`). The weighted layer maps at their
own resolution are stored as ``layer_<name>`` variables: their upsampled sum is ``score``, which
makes the attribution of a region to layers exact (:mod:`fakesegment_nb.segments`).

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
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from ..errors import FakesegmentError
from ..writer import consolidate
from .features import as_tree

__all__ = ["Maps", "build_dataset", "fuse", "read_maps", "score_map", "stored_methods", "upsample", "write_maps"]


@dataclass
class Maps:
    """A method's maps before (or after) they are written.

    Attributes
    ----------
    method : "paired", "reference" or "domain".
    dataset : the ``/maps/<method>`` dataset (see the module docstring), with the root's
        ``image`` coordinate attached.
    seconds : wall time of the computation.
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


def build_dataset(tree, method, idx, scores, layer_maps, w, size, threshold, fpr, calibration, params,
                  n_img, extra=None) -> xr.Dataset:
    """The ``/maps/<method>`` dataset of the scored images ``idx`` (positions in the root):
    ``scores`` ``(len(idx), H, W)``, ``layer_maps`` unweighted, ``threshold`` scalar or per scored
    image; ``extra``: more variables (the fitted state), as xarray ``(dims, values)`` tuples."""
    from .. import __version__

    score = np.full((n_img, *size), np.nan, np.float32)
    score[idx] = scores
    thr = np.full(n_img, np.nan, np.float64)
    thr[idx] = threshold
    # the mask: score above threshold, False where either is NaN (comparisons with NaN are False),
    # compared on the scored rows only (no full-size float copy)
    mask = np.zeros((n_img, *size), bool)
    mask[idx] = np.asarray(scores) > thr[idx][:, None, None]
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
    """Write ``maps`` to ``/maps/<method>`` of ``store`` (replacing earlier maps of that method);
    returns the store's path or URL.

    The root group is never written; the ``image`` coordinate is inherited from it. Per-image
    variables are chunked by image, the fitted state by fold (or whole).
    """
    path = store.encoding.get("source") if isinstance(store, xr.DataTree) else store
    if path is None:
        raise FakesegmentError("write_maps needs the store's path or URL, not an opened tree")
    ds = maps.dataset.drop_vars("image")
    encoding = {k: {"chunks": (1, *ds[k].shape[1:]) if ds[k].dims[0] in ("image", "fold") else ds[k].shape}
                for k in ds.data_vars}
    ds.to_zarr(str(path), group=f"maps/{maps.method}", mode="w", consolidated=False, zarr_format=3,
               encoding=encoding)
    consolidate(str(path))  # plain xr.open_datatree users see the new group at once
    return str(path)


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
