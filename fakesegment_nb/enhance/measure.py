"""Measuring an enhancer: did the gap shrink, and was the content kept?

* :func:`gap_table`: per layer, the ``fid`` of ``layers.csv`` (and ``c2st_auroc``) of a store
  of held-out real + held-out synthetic images against a store of the same real images + the
  enhanced synthetic ones, with whether the enhancer trained on that layer.
* :func:`content_ssim`: per image, SSIM between each enhanced image and its input.

Both are honest only on images the enhancer did not train on: split first
(:func:`~fakesegment_nb.enhance.data.holdout_split`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import FakesegmentError, ImageError
from ..images import load_rgb
from ..manifest import scan_folder

__all__ = ["gap_table", "content_ssim", "c2st_auroc", "map_change"]


def c2st_auroc(real: np.ndarray, synthetic: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold AUROC of a regularised logistic regression telling real from synthetic
    vectors (standardised, stratified k-fold): 0.5 = indistinguishable, 1 = fully separable.

    DESIGN.md section 5's ``c2st_auroc``; :func:`gap_table` uses this only when the store's
    ``layers.csv`` does not have the column.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([real, synthetic]).astype(np.float64)
    y = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
    k = min(folds, len(real), len(synthetic))
    if k < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    p = cross_val_predict(clf, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                          method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def _c2st_of(store) -> dict[str, float]:
    from ..store import feature_layer, image_table, layer_names, open_store

    tree = open_store(store) if isinstance(store, (str, Path)) else store
    dom = image_table(tree)["domain"].to_numpy()
    out = {}
    for l in layer_names(tree):
        v = feature_layer(tree, l).astype("float64").mean(("y", "x")).values
        out[l] = c2st_auroc(v[dom == "real"], v[dom == "synthetic"])
    return out


def gap_table(before, after, trained_layers: Sequence[str] = (), c2st: bool = True) -> pd.DataFrame:
    """Per layer: ``fid_before, fid_after, fid_change`` (after / before - 1) and, with ``c2st``,
    ``c2st_before, c2st_after``; ``trained`` says whether the enhancer trained on the layer.

    ``before`` and ``after`` are stores (paths or DataTrees) of the same model and real images;
    ``c2st_auroc`` comes from ``layers.csv`` where it has that column, else from
    :func:`c2st_auroc` on the per-image vectors.
    """
    from ..stats import layer_table

    tb, ta = layer_table(before), layer_table(after)
    if list(tb["layer"]) != list(ta["layer"]):
        raise FakesegmentError("the before and after stores hold different layers")
    df = pd.DataFrame({"layer": tb["layer"], "trained": tb["layer"].isin(list(trained_layers)),
                       "fid_before": tb["fid"].to_numpy(), "fid_after": ta["fid"].to_numpy()})
    df["fid_change"] = df["fid_after"] / df["fid_before"] - 1
    if c2st:
        if "c2st_auroc" in tb and "c2st_auroc" in ta:
            df["c2st_before"], df["c2st_after"] = tb["c2st_auroc"].to_numpy(), ta["c2st_auroc"].to_numpy()
        else:
            cb, ca = _c2st_of(before), _c2st_of(after)
            df["c2st_before"] = [cb[l] for l in df["layer"]]
            df["c2st_after"] = [ca[l] for l in df["layer"]]
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
