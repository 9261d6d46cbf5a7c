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
from .markup import note_html
from .render import ColorBar, Panel, colorize, draw_box, note_rgb, overlay, panels_figure, score_range, upsample
from .storeview import StoreView

__all__ = ["Selection", "TOP_CHANNELS", "NO_MAPS", "main_panels", "pair_panels", "status_html", "explorer_figure",
           "overlay_threshold", "top_channels", "top_region", "drivers_html", "finite_range"]

TOP_CHANNELS = 20
NO_MAPS = "no unrealistic-detail maps in this store: run `fakesegment maps --store ...`"


@dataclass(frozen=True)
class Selection:
    """What the Explorer shows.

    image, layer, channel : the image and the feature map.
    method : the map method of the overlay; None when the store has no maps.
    threshold : the overlay's score threshold (a location is flagged where its score is above it).
    alpha : the overlay's opacity, 0 (the image only) to 1.
    box : the region, ``(x0, x1, y0, y1)`` in network-input pixels, at least one pixel each way.
    """

    image: str
    layer: str
    channel: int = 0
    method: str | None = None
    threshold: float = 0.5
    alpha: float = 0.6
    box: tuple[int, int, int, int] = (0, 1, 0, 1)


def _rgb(view: StoreView, image: str) -> np.ndarray:
    rgb = view.rgb(image)
    return note_rgb(view.input_size) if rgb is None else rgb


def finite_range(a: np.ndarray) -> tuple[float, float]:
    """Colour limits of a feature map: its finite minimum and maximum, never equal."""
    f = a[np.isfinite(a)]
    if f.size == 0:
        return 0.0, 1.0
    lo, hi = float(f.min()), float(f.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def main_panels(view: StoreView, sel: Selection) -> list[Panel]:
    """image (with the region's box) | feature map | unrealistic-detail overlay."""
    im, layer, ch = sel.image, sel.layer, int(sel.channel)
    rgb = _rgb(view, im)
    fm = view.fmap(im, layer, ch)
    lo, hi = finite_range(fm)
    return [Panel(f"{im} ({view.domain(im)})", draw_box(rgb, sel.box)),
            Panel(f"{layer} · channel {ch} ({fm.shape[0]}×{fm.shape[1]} cells)",
                  upsample(colorize(fm, "viridis", lo, hi), view.input_size), ColorBar("viridis", lo, hi, "activation")),
            _overlay_panel(view, sel, rgb)]


def _overlay_panel(view: StoreView, sel: Selection, rgb: np.ndarray) -> Panel:
    if sel.method is None:
        return Panel("unrealistic-detail overlay", rgb, note=NO_MAPS)
    m, im = sel.method, sel.image
    score = view.score(m, im)
    if not np.isfinite(score).any():
        return Panel(f"{m} overlay", rgb, note=f"the '{m}' map does not apply to {view.domain(im)} images")
    thr = float(sel.threshold)
    hit = np.nan_to_num(score, nan=-np.inf) > thr  # the maps' own mask rule: score > threshold
    if not hit.any():  # no colour on the image: a colour bar would span threshold..threshold
        return Panel(f"{m} score > {thr:.3g}: 0.0% of the image", rgb,
                     note=f"no location of this image scores above {thr:.3g} (its maximum is "
                          f"{float(np.nanmax(score)):.3g}); lower the threshold to see more")
    lo, hi, log = score_range(score, thr)
    return Panel(f"{m} score > {thr:.3g}: {100 * hit.mean():.1f}% of the image",
                 overlay(rgb, score, hit, lo, hi, sel.alpha, log=log), ColorBar("magma", lo, hi, "unrealistic score", log))


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
    return [Panel(f"synthetic: {syn}", _rgb(view, syn)), Panel(f"real: {real}", _rgb(view, real)),
            Panel(f"discrepancy {layer} · ch {ch} (mean |Δ| {np.nanmean(np.abs(diff)):.3g})",
                  upsample(colorize(diff, "RdBu_r", -lim, lim), view.input_size),
                  ColorBar("RdBu_r", -lim, lim, "synthetic − real"))]


def status_html(view: StoreView, sel: Selection) -> str:
    """A note for each shown image (the selection and its pair) whose source file cannot be read
    (its panels show a grey placeholder); '' when all can."""
    shown = [sel.image] + ([view.partner(sel.image)] if view.partner(sel.image) else [])
    return "".join(note_html(f"source image not found: {view.table.at[im, 'path']}")
                   for im in shown if view.rgb(im) is None)


def explorer_figure(view: StoreView, sel: Selection):
    """The main and pair panels as one static matplotlib figure (reports, HTML export)."""
    panels = main_panels(view, sel) + (pair_panels(view, sel) or [])
    return panels_figure(panels, ncols=3, suptitle=f"Explorer: {sel.image} · layer {sel.layer} · "
                                                    f"channel {int(sel.channel)}")


def overlay_threshold(view: StoreView, method: str, image: str) -> tuple[float, float, float]:
    """The overlay threshold to start from and its slider range: ``(threshold, log10 min, log10 max)``.

    The threshold the maps step calibrated (per image where it is per image), else half the
    image's top score. The range is fixed around it, 1/100 to 10^4 times: reading every map for
    the true maximum would make opening the Explorer on a large store slow, and scores are
    heavy-tailed.
    """
    thr = view.threshold(method, image)
    if thr is None or not thr > 0:
        score = view.score(method, image)
        top = float(np.nanmax(score)) if np.isfinite(score).any() else 1.0
        thr = 0.5 * top if top > 0 else 1.0
    return thr, float(np.log10(thr) - 2), float(np.log10(thr) + 4)


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
    """The ``size`` x ``size`` window (default a fifth of the input, at least 8 px) of highest mean
    ``method`` score on ``image``, as ``(x0, x1, y0, y1)``; None when the map does not score the image."""
    score = view.score(method, image)
    if not np.isfinite(score).any():
        return None
    H, Wd = view.input_size
    size = size or max(8, min(H, Wd) // 5)
    s = np.nan_to_num(score, nan=0.0)
    ii = np.pad(s, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # box sums through an integral image
    sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    y0, x0 = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x0), int(x0) + size, int(y0), int(y0) + size


def drivers_html(view: StoreView, sel: Selection, top: int = 10) -> tuple[str, pd.DataFrame | None]:
    """What drives the selected region, as HTML, and the channel table shown (None if none is).

    With a map that scores the image: the exact split of the region's mean score into layers and
    channels (:func:`fakesegment_nb.segments.attribute`). Otherwise: the channels whose mean
    activation in the region departs most from real (:func:`fakesegment_nb.regions.region_drivers`).
    """
    im, m = sel.image, sel.method
    x0, x1, y0, y1 = sel.box
    where = f"x {x0}–{x1}, y {y0}–{y1}"
    fmt = dict(index=False, float_format=lambda x: f"{x:.3g}")
    parts, df = [], None
    # attribution re-reads the real images the map was made from (the twin, for paired)
    scored = m is not None and view.two_domains and np.isfinite(view.score(m, im)).any()
    if scored and (m != "paired" or view.partner(im)):
        from ..segments import attribute

        try:
            att = attribute(view.tree, im, box=(y0, x0, y1, x1), method=m, top=top)
        except FakesegmentError as exc:
            parts.append(note_html(str(exc)))
        else:
            df = att.channels.head(top)
            parts.append(f"<b>Layers driving the {m} score in {where}</b> (mean score {att.score:.3g})"
                         + att.layers.to_html(**fmt))
            parts.append("<b>Channels driving it</b> (share of the region's score)" + df.to_html(**fmt))
    if df is None:
        try:
            df = region_drivers(view, im, sel.box, top=top)
        except FakesegmentError as exc:
            parts.append(note_html(str(exc)))
        else:
            ref = "its paired real image" if view.partner(im) else "the mean of the real images"
            parts.append(f"<b>Channels departing most from {ref} in {where}</b> "
                         "(z = difference / spread of the real images)" + df.to_html(**fmt))
    return ("<div style='display:flex;gap:24px;align-items:flex-start'>"
            + "".join(f"<div>{p}</div>" for p in parts) + "</div>"), df
