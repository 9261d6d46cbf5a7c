"""Measuring an enhancer: did the gap shrink, and was the content kept?

* :func:`gap_table`: per layer, the ``fid`` of ``layers.csv`` (and ``c2st_auroc``) of held-out
  real + held-out synthetic images against the same real images + the enhanced synthetic ones,
  with whether the enhancer trained on that layer: two sets of one store (``synthetic`` and
  ``enhanced``, the real images stored once) or two stores.
* :func:`content_ssim`: per image, SSIM between each enhanced image and its input.

Both are honest only on images the enhancer did not train on: split first
(:func:`~fakesegment_nb.enhance.data.holdout_split`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import FakesegmentError, ImageError
from ..images import load_rgb
from ..manifest import scan_folder

__all__ = ["gap_table", "content_ssim", "map_change"]


def _sets(before, after, before_set, after_set) -> tuple[str, str]:
    """The sets compared: by default the first set of each store, or with one store (``after``
    None) its first and its last."""
    from ..store import set_names

    names_b = set_names(before)
    names_a = names_b if after is None else set_names(after)
    b = before_set or (names_b[0] if names_b else None)
    a = after_set or ((names_a[-1] if after is None else names_a[0]) if names_a else None)
    if b is None or a is None:
        raise FakesegmentError("the before or after store holds no synthetic set")
    if after is None and a == b:
        raise FakesegmentError(f"one store and one set ({b!r}): name the after set (after_set=) or give an after store")
    return b, a


def gap_table(before, after=None, trained_layers: Sequence[str] = (), c2st: bool = True, *,
              before_set: str | None = None, after_set: str | None = None) -> pd.DataFrame:
    """Per layer: ``fid_before, fid_after, fid_change`` (after / before - 1) and, with ``c2st``,
    ``c2st_before, c2st_after``; ``trained`` says whether the enhancer trained on the layer.

    ``before`` and ``after`` are stores (paths or DataTrees) of the same model and real images;
    both columns come from their ``layers.csv`` (``fid``, ``c2st_auroc``) rows of ``before_set``
    and ``after_set`` (default: each store's first set). With ``after`` None both sets come from
    the one store ``before`` (default: its first and its last set), e.g. ``synthetic`` and the
    enhancer's output extracted into the same store as ``enhanced``: each set's rows equal those
    of a store holding that set alone, and the real images are stored once.
    """
    from ..stats import layer_table

    bset, aset = _sets(before, after, before_set, after_set)
    tb = layer_table(before, set_name=bset)
    ta = layer_table(before if after is None else after, set_name=aset)
    if list(tb["layer"]) != list(ta["layer"]):
        raise FakesegmentError("the before and after stores hold different layers")
    df = pd.DataFrame({"layer": tb["layer"], "trained": tb["layer"].isin(list(trained_layers)),
                       "fid_before": tb["fid"].to_numpy(), "fid_after": ta["fid"].to_numpy()})
    df["fid_change"] = df["fid_after"] / df["fid_before"] - 1
    if c2st:
        df["c2st_before"], df["c2st_after"] = tb["c2st_auroc"].to_numpy(), ta["c2st_auroc"].to_numpy()
    df.attrs.update(before_set=bset, after_set=aset)
    return df.reset_index(drop=True)


def content_ssim(inputs, outputs) -> pd.DataFrame:
    """SSIM between each image under ``outputs`` and the image with the same relative path under
    ``inputs`` (skimage's ``structural_similarity`` on the 8-bit RGB images, ``data_range=255``,
    ``channel_axis=2``, its default 7x7 window): columns ``image, ssim``."""
    from skimage.metrics import structural_similarity

    src = {e.image.split("/", 1)[1]: e.path for e in scan_folder(inputs, "synthetic")}
    rows = []
    for e in scan_folder(outputs, "synthetic"):
        rel = e.image.split("/", 1)[1]
        if rel not in src:
            continue
        try:
            a, b = load_rgb(src[rel]), load_rgb(e.path)
        except ImageError:
            continue
        if a.shape != b.shape or min(a.shape[:2]) < 7:
            continue
        rows.append({"image": rel, "ssim": float(structural_similarity(a, b, data_range=255, channel_axis=2))})
    if not rows:
        raise FakesegmentError(f"no image under {outputs} has a same-sized input under {inputs}")
    return pd.DataFrame(rows)


def map_change(before, after=None, method: str = "reference", *, before_set: str | None = None,
               after_set: str | None = None) -> pd.DataFrame:
    """Did the unrealistic-detail maps fade? Per synthetic image of ``before_set`` whose
    relative path (its id without the set's prefix) is also in ``after_set``: ``score_before,
    score_after`` (mean map score) and ``masked_before, masked_after`` (share of pixels in the
    mask, thresholded on the store's real images); ``image`` and ``image_after`` are their ids.
    Sets and stores as in :func:`gap_table` (``after`` None: two sets of one store). The stores
    need ``maps/<method>`` (:func:`~fakesegment_nb.maps.compute_maps`)."""
    from ..maps import read_maps
    from ..store import image_table

    bset, aset = _sets(before, after, before_set, after_set)
    found = {}
    for tag, store, name in (("before", before, bset), ("after", before if after is None else after, aset)):
        ds = read_maps(store, method)
        tab = image_table(store)
        mine = set(tab.index[(tab["domain"] == "synthetic") & (tab["set"] == name)])
        rows = found[tag] = {}
        for i, img in enumerate(str(v) for v in ds["image"].values):
            if img not in mine:
                continue
            s = np.asarray(ds["score"][i].values, np.float64)
            m = np.asarray(ds["mask"][i].values, bool) if "mask" in ds else np.zeros(s.shape, bool)
            rows[img.split("/", 1)[1]] = {"image" if tag == "before" else "image_after": img,
                                          f"score_{tag}": float(np.nanmean(s)) if np.isfinite(s).any() else float("nan"),
                                          f"masked_{tag}": float(m.mean())}
    df = pd.DataFrame([{**found["before"][k], **found["after"][k]} for k in found["before"] if k in found["after"]])
    if df.empty:
        raise FakesegmentError(f"sets {bset!r} and {aset!r} share no synthetic image (by relative path) with maps")
    return df[["image", "image_after", "score_before", "score_after", "masked_before", "masked_after"]]
