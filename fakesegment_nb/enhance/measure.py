"""Measuring an enhancer: did the gap shrink, and was the content kept?

* :func:`gap_table`: per layer, the ``fid`` of ``layers.csv`` (and ``c2st_auroc``) of a store
  of held-out real + held-out synthetic images against a store of the same real images + the
  enhanced synthetic ones, with whether the enhancer trained on that layer.
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


def gap_table(before, after, trained_layers: Sequence[str] = (), c2st: bool = True) -> pd.DataFrame:
    """Per layer: ``fid_before, fid_after, fid_change`` (after / before - 1) and, with ``c2st``,
    ``c2st_before, c2st_after``; ``trained`` says whether the enhancer trained on the layer.

    ``before`` and ``after`` are stores (paths or DataTrees) of the same model and real images;
    both columns come from their ``layers.csv`` (``fid``, ``c2st_auroc``).
    """
    from ..stats import layer_table

    tb, ta = layer_table(before), layer_table(after)
    if list(tb["layer"]) != list(ta["layer"]):
        raise FakesegmentError("the before and after stores hold different layers")
    df = pd.DataFrame({"layer": tb["layer"], "trained": tb["layer"].isin(list(trained_layers)),
                       "fid_before": tb["fid"].to_numpy(), "fid_after": ta["fid"].to_numpy()})
    df["fid_change"] = df["fid_after"] / df["fid_before"] - 1
    if c2st:
        df["c2st_before"], df["c2st_after"] = tb["c2st_auroc"].to_numpy(), ta["c2st_auroc"].to_numpy()
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


def map_change(before, after, method: str = "reference") -> pd.DataFrame:
    """Did the unrealistic-detail maps fade? Per synthetic image held in both stores (by id):
    ``score_before, score_after`` (mean map score) and ``masked_before, masked_after`` (share of
    pixels in the mask, thresholded on each store's real images). Both stores need
    ``maps/<method>`` (:func:`~fakesegment_nb.maps.compute_maps`)."""
    from ..maps import read_maps
    from ..store import image_table

    rows = {}
    for tag, store in (("before", before), ("after", after)):
        ds = read_maps(store, method)
        tab = image_table(store)
        dom = (tab.set_index("image") if "image" in tab.columns else tab)["domain"]
        for i, img in enumerate(str(v) for v in ds["image"].values):
            if dom.get(img) != "synthetic":
                continue
            s = np.asarray(ds["score"][i].values, np.float64)
            m = np.asarray(ds["mask"][i].values, bool) if "mask" in ds else np.zeros(s.shape, bool)
            rows.setdefault(img, {"image": img})
            rows[img][f"score_{tag}"] = float(np.nanmean(s)) if np.isfinite(s).any() else float("nan")
            rows[img][f"masked_{tag}"] = float(m.mean())
    df = pd.DataFrame([r for r in rows.values() if len(r) == 5])
    if df.empty:
        raise FakesegmentError("the before and after stores share no synthetic image id with maps")
    return df[["image", "score_before", "score_after", "masked_before", "masked_after"]]
