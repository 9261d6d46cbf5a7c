"""What the Explorer shows, as pure functions of a :class:`StoreView` and a :class:`Selection`.

Each function reads the store through the view and returns panels (drawn by the widget's
:class:`~fakesegment_nb.widgets.panelview.PanelView` or by matplotlib), a figure, a table or
HTML; none needs ipywidgets or a front end. :class:`~fakesegment_nb.widgets.explorer.Explorer`
is the wiring: its controls make a :class:`Selection` and show what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import FakesegmentError
from ..regions import region_drivers
from .mappanels import image_panel, map_panel, map_question, picture
from .markup import note_html
from .render import ColorBar, Panel, colorize, panels_figure, upsample
from .storeview import StoreView

__all__ = ["Selection", "TOP_CHANNELS", "NO_MAPS", "main_panels", "map_panels", "pair_panels", "status_html",
           "explorer_figure", "overlay_threshold", "top_channels", "top_region", "drivers_html", "finite_range",
           "input_box", "image_box"]

TOP_CHANNELS = 20
NO_MAPS = "no unrealistic-detail maps in this store: run `fakesegment maps --store ...`"


@dataclass(frozen=True)
class Selection:
    """What the Explorer shows.

    image, layer, channel : the image and the feature map.
    method : the map the threshold, the region search and the drivers apply to; None when the
        store has no maps. Every map of the store is shown; the others at their calibrated
        thresholds.
    threshold : ``method``'s outline threshold (a location is in the mask where its score is above it).
    alpha : the heat maps' opacity, 0 (the image only) to 1.
    box : the region, ``(x0, x1, y0, y1)`` in pixels of the original image (its own height and
        width), at least one pixel each way.
    """

    image: str
    layer: str
    channel: int = 0
    method: str | None = None
    threshold: float = 0.5
    alpha: float = 0.6
    box: tuple[int, int, int, int] = (0, 1, 0, 1)


def input_box(view: StoreView, image: str, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """An image-pixel box ``(x0, x1, y0, y1)`` in network-input pixels (the maps' and features'
    grid: the whole image resized to the input), covering it, at least one pixel each way."""
    (h, w), (H, W) = view.original_size(image), view.input_size
    x0, x1, y0, y1 = (int(v) for v in box)
    X0, Y0 = min(max(x0 * W // w, 0), W - 1), min(max(y0 * H // h, 0), H - 1)
    X1, Y1 = -(-x1 * W // w), -(-y1 * H // h)  # ceil, exact in integers
    return X0, min(max(X1, X0 + 1), W), Y0, min(max(Y1, Y0 + 1), H)


def image_box(view: StoreView, image: str, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A network-input-pixel box ``(x0, x1, y0, y1)`` in pixels of the original image, covering it."""
    (h, w), (H, W) = view.original_size(image), view.input_size
    x0, x1, y0, y1 = (int(v) for v in box)
    X0, Y0 = min(max(x0 * w // W, 0), w - 1), min(max(y0 * h // H, 0), h - 1)
    X1, Y1 = -(-x1 * w // W), -(-y1 * h // H)
    return X0, min(max(X1, X0 + 1), w), Y0, min(max(Y1, Y0 + 1), h)


def finite_range(a: np.ndarray) -> tuple[float, float]:
    """Colour limits of a feature map: its finite minimum and maximum, never equal."""
    f = a[np.isfinite(a)]
    if f.size == 0:
        return 0.0, 1.0
    lo, hi = float(f.min()), float(f.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _stretched(view: StoreView, image: str, a: np.ndarray, cmap: str, lo: float, hi: float) -> np.ndarray:
    """A feature-grid array colour-mapped and stretched (cells kept visible) onto the image's display shape."""
    return upsample(colorize(a, cmap, lo, hi), view.display_shape(image))


def main_panels(view: StoreView, sel: Selection) -> list[Panel]:
    """The image (with the region's box) | the feature map, both at the image's aspect ratio."""
    im, layer, ch = sel.image, sel.layer, int(sel.channel)
    fm = view.fmap(im, layer, ch)
    lo, hi = finite_range(fm)
    pic = image_panel(view, im, sel.box)
    return [pic, Panel(f"{layer} · channel {ch} ({fm.shape[0]}×{fm.shape[1]} cells)",
                       _stretched(view, im, fm, "viridis", lo, hi), ColorBar("viridis", lo, hi, "activation"),
                       xlabel=pic.xlabel, ylabel=pic.ylabel, extent=pic.extent)]


def map_panels(view: StoreView, sel: Selection) -> list[Panel]:
    """Every map of the store over the image, side by side (``domain``: looks rendered here,
    ``reference``: unusual details here, ``paired``: differs from its real twin here); the
    selected method at the selection's threshold, the others at their calibrated ones."""
    if sel.method is None:
        return [Panel("maps", picture(view, sel.image), note=NO_MAPS)]
    return [map_panel(view, m, sel.image, sel.threshold if m == sel.method else None, sel.alpha)
            for m in view.methods()]


def pair_panels(view: StoreView, sel: Selection) -> list[Panel] | None:
    """synthetic | real | their feature-map discrepancy (synthetic − real) for the selected layer
    and channel; None when the image's pair is not in the view."""
    layer, ch = sel.layer, int(sel.channel)
    other = view.partner(sel.image)
    if other is None:
        return None
    syn, real = (sel.image, other) if view.domain(sel.image) == "synthetic" else (other, sel.image)
    diff = view.fmap(syn, layer, ch) - view.fmap(real, layer, ch)
    lim = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
    lim = lim if lim > 0 else 1.0
    s, r = image_panel(view, syn), image_panel(view, real)
    return [Panel(f"synthetic: {syn}", s.rgb, extent=s.extent, xlabel=s.xlabel, ylabel=s.ylabel),
            Panel(f"real: {real}", r.rgb, extent=r.extent, xlabel=r.xlabel, ylabel=r.ylabel),
            Panel(f"discrepancy {layer} · ch {ch} (mean |Δ| {np.nanmean(np.abs(diff)):.3g})",
                  _stretched(view, syn, diff, "RdBu_r", -lim, lim), ColorBar("RdBu_r", -lim, lim, "synthetic − real"),
                  extent=s.extent, xlabel=s.xlabel, ylabel=s.ylabel)]


def status_html(view: StoreView, sel: Selection) -> str:
    """A note for each shown image (the selection and its pair) whose source file cannot be read
    (its panels show a grey placeholder); '' when all can."""
    shown = [sel.image] + ([view.partner(sel.image)] if view.partner(sel.image) else [])
    return "".join(note_html(f"source image not found: {view.table.at[im, 'path']}")
                   for im in shown if view.picture(im) is None)


def explorer_figure(view: StoreView, sel: Selection):
    """The image and feature map, the maps, and the pair as one static matplotlib figure (reports,
    HTML export), one row each."""
    rows = [main_panels(view, sel), map_panels(view, sel), pair_panels(view, sel) or []]
    return panels_figure(rows, suptitle=f"Explorer: {sel.image} · layer {sel.layer} · channel {int(sel.channel)}")


def overlay_threshold(view: StoreView, method: str, image: str) -> tuple[float, float, float, bool]:
    """The outline threshold to start from, its slider range and scale: ``(threshold, lo, hi, log)``.

    The threshold the maps step calibrated (per image where it is per image), else half the
    image's top score. Non-negative maps with a positive threshold (distances: heavy-tailed) get a
    log slider, ``lo``/``hi`` in log10 units, from 1/100 of the threshold to 1.5 times the image's
    top score (at least 10 times the threshold); other maps a linear one over the image's scores
    and the threshold. Only this image's map is read.
    """
    score = view.score(method, image)
    finite = score[np.isfinite(score)]
    smin, smax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    thr = view.threshold(method, image)
    if thr is None:
        thr = 0.5 * smax if smax > 0 else (smin + smax) / 2
    if thr > 0 and smin >= 0:
        return thr, float(np.log10(thr) - 2), float(np.log10(max(10 * thr, 1.5 * smax))), True
    lo, hi = min(smin, thr), max(smax, thr)
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(thr), 1.0) * 0.5
    return thr, lo - pad, hi + pad, False


def top_channels(view: StoreView, layer: str, n: int = TOP_CHANNELS) -> tuple[list[tuple[str, int]], str | None]:
    """The ``n`` channels of ``layer`` with the largest |effect size| (``channels.csv``), as
    ``(label, channel)`` options, and None; or ``([], why)`` when the statistics are unavailable."""
    tables, why = view.stats()
    if tables is None:
        return [], why
    t = tables.channels[tables.channels["layer"] == layer]
    t = t.reindex(t["effect_size"].abs().sort_values(ascending=False).index).head(n)
    return [(f"ch {int(r.channel)} (d = {r.effect_size:+.2f})", int(r.channel)) for r in t.itertuples()], None


def top_region(view: StoreView, method: str, image: str, size: int | None = None) -> tuple[int, int, int, int] | None:
    """The ``size`` x ``size`` window of network-input pixels (default a fifth of the input, at
    least 8 px) of highest mean ``method`` score on ``image``, as ``(x0, x1, y0, y1)`` in pixels of
    the original image; None when the map does not score the image."""
    score = view.score(method, image)
    if not np.isfinite(score).any():
        return None
    H, Wd = view.input_size
    size = size or max(8, min(H, Wd) // 5)
    s = np.nan_to_num(score, nan=0.0)
    ii = np.pad(s, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # box sums through an integral image
    sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    y0, x0 = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return image_box(view, image, (int(x0), int(x0) + size, int(y0), int(y0) + size))


def drivers_html(view: StoreView, sel: Selection, top: int = 10) -> tuple[str, pd.DataFrame | None]:
    """What drives the selected region, as HTML, and the channel table shown (None if none is).

    With a map that scores the image: the exact split of the region's mean score into layers and
    channels (:func:`fakesegment_nb.segments.attribute`). Otherwise: the channels whose mean
    activation in the region departs most from real (:func:`fakesegment_nb.regions.region_drivers`).
    """
    im, m = sel.image, sel.method
    x0, x1, y0, y1 = sel.box
    where = f"x {x0}–{x1}, y {y0}–{y1} (image px)"
    box = input_box(view, im, sel.box)  # the maps' and features' grid
    fmt = dict(index=False, float_format=lambda x: f"{x:.3g}")
    parts, df = [], None
    # attribution re-reads the real images the map was made from (the twin, for paired)
    scored = m is not None and view.two_domains and np.isfinite(view.score(m, im)).any()
    if scored and (m != "paired" or view.partner(im)):
        from ..segments import attribute

        try:
            att = attribute(view.tree, im, box=(box[2], box[0], box[3], box[1]), method=m, top=top)
        except FakesegmentError as exc:
            parts.append(note_html(str(exc)))
        else:
            df = att.channels.head(top)
            parts.append(f"<b>Layers driving the {m} score ({map_question(m)}) in {where}</b> "
                         f"(mean score {att.score:.3g})"
                         + att.layers.to_html(**fmt))
            parts.append("<b>Channels driving it</b> (share of the region's score)" + df.to_html(**fmt))
    if df is None:
        try:
            df = region_drivers(view, im, box, top=top)
        except FakesegmentError as exc:
            parts.append(note_html(str(exc)))
        else:
            ref = "its paired real image" if view.partner(im) else "the mean of the real images"
            parts.append(f"<b>Channels departing most from {ref} in {where}</b> "
                         "(z = difference / spread of the real images)" + df.to_html(**fmt))
    return ("<div style='display:flex;gap:24px;align-items:flex-start'>"
            + "".join(f"<div>{p}</div>" for p in parts) + "</div>"), df
