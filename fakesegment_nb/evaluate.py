"""Evaluating unrealistic-detail maps against ground-truth masks (DESIGN.md section 6).

Ground-truth masks are PNGs (non-zero = unrealistic) named like the synthetic images. Two
resolutions (``resolution``):

``"input"`` (default)  the network input resolution (root attribute ``input_size``), where the
    stored maps are: each mask is resized there with nearest-neighbour sampling, after being
    resized to its image's own size first when it has another size (reported in ``notes``).
    A 2:1 render is squashed into a square input, and so is its mask.
``"original"``  each mask's own resolution (the original image's: a mask of another size than its
    image is noted and used as it is): every map is resized onto the mask's grid, bilinear with
    scikit-image (:func:`fakesegment_nb.resample.resize_map`), and its calibrated threshold
    applied there. The pixel baselines are computed as at ``"input"`` and resized the same way,
    so methods and baselines go through the same resampling. Masks are held in memory as bool
    at their own size.

Metrics, per method and per baseline, over the synthetic images that have a mask with at least
one unrealistic and one realistic pixel:

``auroc``     pixel AUROC of the score per image (Mann-Whitney, ties counted half), mean over images;
``ap``        average precision per image (step-wise, as scikit-learn's), mean over images;
``ap_pooled`` average precision over the pixels of all images together (over every ``k``-th pixel
              of each image when all images hold more than :data:`POOLED_PIXELS`, ``k`` the
              smallest stride that keeps within it; said in ``notes``);
``iou``       IoU of the calibrated mask, pooled (sum of intersections / sum of unions);
``iou_mean``  IoU of the calibrated mask per image, mean over images.

Baselines, computed on the images themselves (resized to the input size as the network's own
transform does, bilinear), for paired images: ``pixel_absdiff`` = |synthetic - real| averaged
over RGB, and ``pixel_1-ssim`` = 1 - SSIM map (scikit-image's, Gaussian window sigma 1.5,
data range 1) averaged over RGB. Their masks are calibrated like ``paired`` maps: per image,
median + z* x MAD of the map, z* the ``1 - fpr`` quantile of the same standardised map on real
images paired with themselves moved by one pixel (along y and along x).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .calibration import DEFAULT_FPR, calibrate_z, per_image_thresholds, shift_cells
from .errors import FakesegmentError, ParameterError
from .maps import as_tree, image_pairs, input_size, read_maps, stored_methods
from .resample import resize_map
from .store import image_table

__all__ = ["BASELINES", "POOLED_PIXELS", "RESOLUTIONS", "Evaluation", "auroc", "average_precision", "baseline_maps",
           "evaluate", "format_table", "iou", "load_masks", "mask_path", "score_images", "write_json"]

BASELINES = ("pixel_absdiff", "pixel_1-ssim")
RESOLUTIONS = {"input": "the network input resolution (masks resized to the stored maps)",
               "original": "each mask's own resolution, the original image's (maps resized onto it)"}
# ``ap_pooled`` sorts every pixel of every image at once: beyond this many, every k-th pixel
POOLED_PIXELS = 100_000_000


def _check_resolution(resolution: str) -> None:
    if resolution not in RESOLUTIONS:
        raise ParameterError("resolution", f"must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")


# --------------------------------------------------------------------------------------------
# ranking metrics


def _flat(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Scores (NaN ranked lowest) and boolean labels, flattened and checked to match."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels, bool).ravel()
    if s.shape != y.shape:
        raise ValueError("scores and labels must have the same number of elements")
    return np.nan_to_num(s, nan=-np.inf), y


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count one half).

    NaN when ``labels`` holds only one class. Equal to the Mann-Whitney U statistic divided by
    ``n_pos * n_neg``.
    """
    from scipy.stats import rankdata

    s, y = _flat(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores, labels) -> float:
    """Average precision: sum over distinct thresholds of (recall step) x precision.

    The step-wise definition of scikit-learn's ``average_precision_score`` (no interpolation);
    NaN without positives.
    """
    s, y = _flat(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def iou(pred, truth) -> float:
    """Intersection over union of two boolean masks (NaN when both are empty)."""
    p = np.asarray(pred, bool)
    t = np.asarray(truth, bool)
    union = np.logical_or(p, t).sum()
    return float(np.logical_and(p, t).sum() / union) if union else float("nan")


# --------------------------------------------------------------------------------------------
# ground truth


def _resize_nearest(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if m.shape == tuple(hw):
        return m
    return np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((hw[1], hw[0]), Image.NEAREST)) > 0


def mask_path(masks_dir: str | Path, image_id: str) -> Path | None:
    """The ground-truth mask file of a synthetic image id (``synthetic/a/b.jpg`` ->
    ``masks_dir/a/b.png``, else ``masks_dir/a/b.jpg``), or None."""
    rel = Path(image_id.split("/", 1)[1] if "/" in image_id else image_id)
    for cand in (Path(masks_dir) / rel.with_suffix(".png"), Path(masks_dir) / rel):
        if cand.is_file():
            return cand
    return None


def load_masks(store, masks_dir: str | Path, resolution: str = "input") -> tuple[dict[str, np.ndarray], list[str]]:
    """Ground-truth masks of the store's synthetic images at the network input size
    (``resolution="input"``) or at their own size (``"original"``).

    Returns
    -------
    ``({image id: bool (H, W)}, notes)``: missing and unreadable masks are reported in the
    notes and skipped; masks of another size than their image are reported, and at ``"input"``
    resized (nearest) to the image's size first.
    """
    _check_resolution(resolution)
    tree = as_tree(store)
    table = image_table(tree)
    size = input_size(tree)
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise FakesegmentError(f"masks folder {masks_dir} does not exist")
    out, notes, missing, resized = {}, [], [], []
    for img, row in table[table["domain"] == "synthetic"].iterrows():
        p = mask_path(masks_dir, img)
        if p is None:
            missing.append(img)
            continue
        try:
            with Image.open(p) as im:
                m = np.asarray(im.convert("L")) > 0
        except (OSError, ValueError) as exc:
            notes.append(f"{p}: cannot read the mask ({exc}); skipped")
            continue
        hw = (int(row["height"]), int(row["width"]))
        if m.shape != hw:
            resized.append(f"{p.name} {m.shape[1]}x{m.shape[0]} -> {hw[1]}x{hw[0]}")
            if resolution == "input":
                m = _resize_nearest(m, hw)
        out[img] = _resize_nearest(m, size) if resolution == "input" else m
    if missing:
        notes.append(f"{len(missing)} synthetic image(s) have no mask in {masks_dir} and were skipped: "
                     + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    if resized and resolution == "input":
        notes.append(f"{len(resized)} mask(s) had another size than their image and were resized "
                     "(nearest neighbour): " + ", ".join(resized[:5]) + (" ..." if len(resized) > 5 else ""))
    elif resized:
        notes.append(f"{len(resized)} mask(s) have another size than their image; the maps are scored at the "
                     "mask's size: " + ", ".join(s.replace("->", "vs image") for s in resized[:5])
                     + (" ..." if len(resized) > 5 else ""))
    if not out:
        raise FakesegmentError(f"no mask in {masks_dir} matches a synthetic image of the store "
                               "(masks are PNGs named like the synthetic image)")
    return out, notes


# --------------------------------------------------------------------------------------------
# baselines


def _load_input(path: str, size: tuple[int, int]) -> np.ndarray:
    """An image file as float ``(3, H, W)`` in [0, 1] at the input size (bilinear, as torchvision)."""
    import torch
    import torch.nn.functional as F

    from .images import load_rgb

    a = torch.from_numpy(load_rgb(path)).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(a, size=size, mode="bilinear", align_corners=False)[0].numpy()


def _baseline_maps(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    from .ssim import ssim_map

    return {"pixel_absdiff": np.abs(a - b).mean(0),
            "pixel_1-ssim": 1.0 - np.nan_to_num(ssim_map(a, b, data_range=1.0), nan=1.0).mean(0)}


def baseline_maps(store, images: list[str] | None = None, fpr: float = DEFAULT_FPR) -> tuple[dict, dict, list[str]]:
    """Pixel baselines of the paired synthetic images, computed on the image files.

    Returns
    -------
    ``({baseline: {image id: (H, W)}}, {baseline: {image id: threshold}}, notes)``. Images
    whose files cannot be read are skipped with a note.
    """
    tree = as_tree(store)
    table = image_table(tree)
    size = input_size(tree)
    syn, real = image_pairs(table)
    want = set(images) if images is not None else None
    out = {b: {} for b in BASELINES}
    null = {b: [] for b in BASELINES}
    notes = []
    for i, j in zip(syn, real):
        img = table.index[i]
        if want is not None and img not in want:
            continue
        try:
            a = _load_input(table["path"].iloc[i], size)
            b = _load_input(table["path"].iloc[j], size)
        except FakesegmentError as exc:
            notes.append(f"baselines skip {img}: {exc}")
            continue
        for k, v in _baseline_maps(a, b).items():
            out[k][img] = v
        for dy, dx in ((0, 1), (1, 0)):
            for k, v in _baseline_maps(shift_cells(b, dy, dx), b).items():
                null[k].append(v)
    thresholds = {}
    for k, v in null.items():
        if not v:
            thresholds[k] = {}
            continue
        z_star = calibrate_z(np.stack(v), fpr)
        ids = list(out[k])
        thresholds[k] = dict(zip(ids, per_image_thresholds(np.stack([out[k][i] for i in ids]), z_star)))
    return out, thresholds, notes


# --------------------------------------------------------------------------------------------
# evaluation


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    table : one row per method / baseline: ``kind`` ("method" or "baseline"), ``auroc``,
        ``ap``, ``ap_pooled``, ``iou``, ``iou_mean``, ``images`` (images with both classes).
    per_image : one row per (name, image): ``auroc``, ``ap``, ``iou``, and ``height``, ``width``
        of the grid it was scored on.
    notes : what was skipped or resized.
    fpr : the false-positive rate the masks were calibrated at.
    resolution : "input" or "original" (see the module docstring).
    """

    table: pd.DataFrame
    per_image: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    fpr: float = DEFAULT_FPR
    resolution: str = "input"

    def to_dict(self) -> dict:
        """JSON-able: ``{"methods": {...}, "baselines": {...}, "notes": [...], ...}``."""
        def rows(kind):
            t = self.table[self.table["kind"] == kind].drop(columns="kind")
            return {name: {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                           for k, v in r.items()} for name, r in t.to_dict("index").items()}

        return {"methods": rows("method"), "baselines": rows("baseline"), "notes": list(self.notes),
                "fpr": self.fpr, "resolution": self.resolution,
                "resolution_description": RESOLUTIONS.get(self.resolution, self.resolution),
                "metrics": {"auroc": "pixel AUROC per image, mean over images",
                            "ap": "average precision per image, mean over images",
                            "ap_pooled": "average precision over all pixels",
                            "iou": "IoU of the calibrated mask, pooled over images",
                            "iou_mean": "IoU of the calibrated mask, mean over images"}}


def score_images(name: str, maps: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                 threshold: float | dict[str, float], pooled_stride: int = 1) -> tuple[dict, list[dict]]:
    """Metrics of one family of score maps against ground truth (see the module docstring).

    ``threshold``: one for all images, or one per image id; the calibrated mask is
    ``score > threshold``. A map of another shape than its ground truth is resized onto it
    (:func:`fakesegment_nb.resample.resize_map`) first. ``pooled_stride``: ``ap_pooled`` over
    every that-many-th pixel of each image.
    """
    per_thr = threshold if isinstance(threshold, dict) else None
    per, pooled_s, pooled_y = [], [], []
    inter = union = 0
    for img, t in truth.items():
        s = maps.get(img)
        if s is None or not np.isfinite(s).any():
            continue
        s = resize_map(s, t.shape)
        thr = per_thr.get(img, np.nan) if per_thr is not None else threshold
        pred = np.nan_to_num(s, nan=-np.inf) > (thr if np.isfinite(thr) else np.inf)
        inter += int(np.logical_and(pred, t).sum())
        union += int(np.logical_or(pred, t).sum())
        has_both = 0 < t.sum() < t.size
        per.append({"name": name, "image": img, "auroc": auroc(s, t) if has_both else np.nan,
                    "ap": average_precision(s, t) if has_both else np.nan, "iou": iou(pred, t),
                    "height": t.shape[0], "width": t.shape[1]})
        pooled_s.append(np.asarray(s, np.float32).ravel()[::pooled_stride])
        pooled_y.append(t.ravel()[::pooled_stride])
    df = pd.DataFrame(per)
    if df.empty:
        return {"auroc": np.nan, "ap": np.nan, "ap_pooled": np.nan, "iou": np.nan, "iou_mean": np.nan,
                "images": 0}, per
    return {"auroc": float(df["auroc"].mean()), "ap": float(df["ap"].mean()),
            "ap_pooled": average_precision(np.concatenate(pooled_s), np.concatenate(pooled_y)),
            "iou": inter / union if union else np.nan, "iou_mean": float(df["iou"].mean()),
            "images": int(df["auroc"].notna().sum())}, per


def evaluate(store, masks_dir: str | Path, methods: list[str] | None = None, baselines: bool = True,
             fpr: float | None = None, resolution: str = "input") -> Evaluation:
    """Score the stored maps (and the pixel baselines) against ground-truth masks.

    Parameters
    ----------
    store : path/URL of a feature store with maps (``fakesegment maps``), or an open tree.
    masks_dir : folder of PNG masks named like the synthetic images (non-zero = unrealistic).
    methods : stored methods to evaluate (default: all stored).
    baselines : also compute the pixel |difference| and 1 - SSIM baselines (paired images).
    fpr : false-positive rate for the baselines' thresholds (default: the paired maps' own).
    resolution : "input" (the network input, where the maps are) or "original" (each mask's own
        size, the original image's: maps resized onto it); see the module docstring.

    Returns
    -------
    Evaluation

    Raises
    ------
    FakesegmentError
        The store has no maps, or no mask matches a synthetic image.
    """
    _check_resolution(resolution)
    tree = as_tree(store)
    have = stored_methods(tree)
    if not have:
        raise FakesegmentError("the store has no maps to evaluate; run `fakesegment maps --store ...` first")
    methods = methods or have
    truth, notes = load_masks(tree, masks_dir, resolution)
    total = sum(t.size for t in truth.values())
    stride = -(-total // POOLED_PIXELS)
    if stride > 1:
        notes.append(f"ap_pooled over one pixel in {stride} of each image: the {len(truth)} masks hold {total} "
                     f"pixels, more than the {POOLED_PIXELS} sorted at once")
    rows, per = [], []
    fprs = []
    for m in methods:
        ds = read_maps(tree, m)
        ids = [str(v) for v in ds["image"].values]
        pos = {k: i for i, k in enumerate(ids)}
        sel = [img for img in truth if img in pos]
        score = np.asarray(ds["score"].variable[[pos[i] for i in sel]].values, np.float32) if sel else []
        maps = dict(zip(sel, score))
        thr = np.asarray(ds["threshold"].values, np.float64)
        summary, p = score_images(m, maps, truth, {i: float(thr[pos[i]]) for i in sel}, stride)
        fprs.append(float(ds.attrs.get("fpr", DEFAULT_FPR)))
        rows.append({"name": m, "kind": "method", **summary})
        per.extend(p)
    if baselines:
        bfpr = fpr if fpr is not None else (fprs[0] if fprs else DEFAULT_FPR)
        bmaps, thr, bnotes = baseline_maps(tree, list(truth), fpr=bfpr)
        notes.extend(bnotes)
        if not any(bmaps[b] for b in BASELINES):
            notes.append("no paired synthetic image with a mask: pixel baselines not computed")
        else:
            for b in BASELINES:
                summary, p = score_images(b, bmaps[b], truth, thr[b], stride)
                rows.append({"name": b, "kind": "baseline", **summary})
                per.extend(p)
    table = pd.DataFrame(rows).set_index("name")
    return Evaluation(table, pd.DataFrame(per), notes, fprs[0] if fprs else DEFAULT_FPR, resolution)


def format_table(ev: Evaluation) -> str:
    """The evaluation table as aligned text (what the CLI prints)."""
    cols = ["kind", "auroc", "ap", "ap_pooled", "iou", "iou_mean", "images"]
    return ev.table[cols].to_string(float_format=lambda v: f"{v:.3f}")


def write_json(ev: Evaluation, path: str | Path) -> None:
    """Write :meth:`Evaluation.to_dict` as JSON to ``path`` (folders created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(ev.to_dict(), indent=1, default=float))
