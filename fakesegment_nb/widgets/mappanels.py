"""One image's maps as panels, each titled by the question it answers, drawn over the image at
its own aspect ratio; shared by the Gallery, the Explorer and the report. No ipywidgets.

The stored maps are at the network input resolution (a 2:1 render squashed into the square
input); each panel resizes the map onto the image at :meth:`StoreView.display_shape`
(:func:`fakesegment_nb.resample.resize_map`), draws the heat map over it and outlines the mask
(:func:`fakesegment_nb.widgets.render.heat_overlay`), so a mask that covers almost the whole
image still leaves a readable picture. The share of the image a mask covers is the stored
mask's area fraction (area fractions do not change when an image is resized).
"""

from __future__ import annotations

import numpy as np

from .render import ColorBar, Panel, draw_box, heat_overlay, heat_range, note_rgb
from .storeview import StoreView

__all__ = ["MAP_QUESTIONS", "MAP_ANSWERS", "MAP_METHODS_EXPLAINED", "map_question", "area_words", "picture",
           "image_panel", "map_panel", "not_scored"]

# the question each map answers: the panels' titles
MAP_QUESTIONS = {"domain": "looks rendered here", "reference": "unusual details here",
                 "paired": "differs from its real twin here"}
# what a mask's area share says, "34.2% of the image ..."
MAP_ANSWERS = {"domain": "looks rendered", "reference": "has unusual details", "paired": "differs from its real twin"}
MAP_METHODS_EXPLAINED = {
    "domain": "where the image looks like its synthetic set rather than like the real images: a patch "
              "classifier of real vs synthetic features trained with image-level labels only, cross-fitted "
              "(no image is scored by a classifier that saw it)",
    "reference": "which details are unusual: each location's distance to the features of the real images",
    "paired": "where the synthetic image's features differ from those of its real twin (same scene); only "
              "for images with a stored pair",
}


def map_question(method: str) -> str:
    """The question ``method``'s map answers (its panel title), e.g. "looks rendered here"."""
    return MAP_QUESTIONS.get(method, f"{method} map")


def area_words(method: str, share: float | None) -> str:
    """A mask's area share in words: "34.2% of the image looks rendered"."""
    if share is None or not np.isfinite(share):
        return "no calibrated mask"
    return f"{100 * share:.1f}% of the image {MAP_ANSWERS.get(method, 'flagged')}"


def picture(view: StoreView, image: str) -> np.ndarray:
    """The image at its display shape, or a grey placeholder of that shape when its file cannot be read."""
    rgb = view.picture(image)
    return note_rgb(view.display_shape(image)) if rgb is None else rgb


def _axes(view: StoreView, image: str) -> dict:
    h, w = view.original_size(image)
    return {"extent": (0, w, h, 0), "xlabel": "x (image px)", "ylabel": "y (image px)"}


def image_panel(view: StoreView, image: str, box: tuple[int, int, int, int] | None = None) -> Panel:
    """The image at its own aspect ratio, the region ``box`` (``x0, x1, y0, y1`` in image pixels)
    outlined when given."""
    rgb = picture(view, image)
    if box is not None:
        (h, w), (dh, dw) = view.original_size(image), rgb.shape[:2]
        x0, x1, y0, y1 = box
        rgb = draw_box(rgb, (int(x0 * dw / w), int(np.ceil(x1 * dw / w)), int(y0 * dh / h), int(np.ceil(y1 * dh / h))))
    dom = view.domain(image)
    where = f"synthetic set {view.set_of(image)}" if dom == "synthetic" and len(view.sets) > 1 else dom
    return Panel(f"{image} ({where})", rgb, **_axes(view, image))


def not_scored(view: StoreView, method: str, image: str) -> str:
    """Why ``method``'s map does not score ``image``, in words."""
    if method == "paired" and view.domain(image) == "synthetic":
        return f"the '{method}' map does not apply to this image: its real twin is not in the store"
    return f"the '{method}' map does not apply to {view.domain(image)} images"


def map_panel(view: StoreView, method: str, image: str, threshold: float | None = None,
              alpha: float = 0.6) -> Panel:
    """``method``'s map of ``image`` over the image: heat map, mask outline, colour bar.

    Titled by the map's question and the share of the image above ``threshold`` (default: the
    threshold the maps step calibrated on real images, whose mask is the stored one). The colour
    bar spans the map's 1st to 99th percentile on this image and marks the threshold.
    """
    rgb = picture(view, image)
    score = view.score(method, image)
    head = f"{map_question(method)} · {method}"
    if not np.isfinite(score).any():
        return Panel(head, rgb, note=not_scored(view, method, image), **_axes(view, image))
    thr = view.threshold(method, image) if threshold is None else float(threshold)
    if thr is not None:
        share = float((np.nan_to_num(score, nan=-np.inf) > thr).mean())
    else:
        stored = view.mask(method, image)
        share = None if stored is None else float(stored.mean())
    shown = view.display_score(method, image)
    mask = view.display_mask(method, image, thr)
    lo, hi, log = heat_range(shown)
    rule = f"\nscore > {thr:.3g}" if thr is not None else ""
    top = float(np.nanmax(score))
    if thr is not None and share == 0:
        rule = f"\nits maximum {top:.3g} ≤ threshold {thr:.3g}"
    return Panel(f"{head}\n{area_words(method, share)}{rule}", heat_overlay(rgb, shown, mask, lo, hi, alpha, log=log),
                 ColorBar("magma", lo, hi, f"{method} score", log, mark=thr), **_axes(view, image))
