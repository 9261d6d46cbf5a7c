"""``Explorer``: one image at a time -- the image, a feature map, the unrealistic-detail overlay,
and for a pair synthetic | real | discrepancy side by side."""

from __future__ import annotations

import time

import ipywidgets as W
import numpy as np

from ..errors import FakesegmentError
from ..regions import region_drivers
from ._render import (ColorBar, Panel, PanelView, colorize, draw_box, figure_html, note_rgb, overlay, panels_figure,
                      score_range, static_fallback, upsample)
from ._view import StoreView, banner_html, header_html, note_html, optional_module
from .stats_bridge import stats_available

TOP_CHANNELS = 20
segments = optional_module("segments")  # region attribution, when installed


class Explorer(W.VBox):
    """Browse images, layers and channels of a store.

    Parameters
    ----------
    store : store path/URL, DataTree or :class:`StoreView`.
    image, layer, method : initial selection (defaults: first synthetic image, first layer,
        first map method in the store).

    Each interaction redraws only the figure it changes; :attr:`last_redraw_s` holds the time
    the last one took.
    """

    def __init__(self, store, image: str | None = None, layer: str | None = None,
                 method: str | None = None):
        super().__init__()
        self.add_class("fakesegment-explorer")
        self.view = v = StoreView(store)
        self.last_redraw_s = 0.0
        self._hold = False
        H, Wd = v.input_size

        domains = ["all", *v.domains]
        first = image or (v.images("synthetic") or v.images())[0]
        self.domain = W.ToggleButtons(options=domains, value="all", description="domain")
        self.image = W.Dropdown(options=v.images(), value=first, description="image",
                                layout=W.Layout(width="380px"))
        self.layer = W.Dropdown(options=v.layers, value=layer or v.layers[0], description="layer")
        self.channel_mode = W.ToggleButtons(options=["index", "top by effect size"], value="index",
                                            description="channel")
        self.channel = W.IntSlider(min=0, max=v.channels(self.layer.value) - 1, value=0,
                                   description="channel", continuous_update=False)
        self.top_channel = W.Dropdown(options=[], description="top", layout=W.Layout(display="none"))
        methods = v.methods()
        self.method = W.Dropdown(options=methods or ["(no maps)"], value=(method or (methods or ["(no maps)"])[0]),
                                 description="map", disabled=not methods)
        self.alpha = W.FloatSlider(min=0.0, max=1.0, step=0.05, value=0.6, description="alpha",
                                   continuous_update=False)
        # scores are heavy-tailed (a typical discrepancy is ~1, outliers reach 1e4): a log slider
        self.threshold = W.FloatLogSlider(base=10, min=-2, max=0, step=0.02, value=0.5, description="threshold",
                                          continuous_update=False, readout_format=".3g", disabled=not methods)
        self.region_x = W.IntRangeSlider(min=0, max=Wd, value=(Wd // 4, Wd // 2), description="region x",
                                         continuous_update=False)
        self.region_y = W.IntRangeSlider(min=0, max=H, value=(H // 4, H // 2), description="region y",
                                         continuous_update=False)
        self.drivers_button = W.Button(description="Which layers/channels drive it?",
                                       layout=W.Layout(width="260px"))
        self.top_region_button = W.Button(description="Select top-scoring region", disabled=not methods,
                                          layout=W.Layout(width="220px"))
        self.drivers = W.HTML()
        self.status = W.HTML()
        self.main_views = [PanelView(f"fakesegment-explorer-{n}") for n in ("image", "map", "overlay")]
        self.pair_views = [PanelView(f"fakesegment-explorer-{n}") for n in ("synthetic", "real", "discrepancy")]
        self.pair_box = W.VBox([W.HTML("<b>Pair: synthetic | real | discrepancy</b>"), W.HBox(self.pair_views)])

        self.children = [
            W.HTML(banner_html(v.attrs)),
            W.HTML(header_html(v, "Explorer")),
            W.HBox([self.domain]), W.HBox([self.image, self.layer]),
            W.HBox([self.channel_mode, self.channel, self.top_channel]),
            W.HBox([self.method, self.alpha, self.threshold]),
            self.status, W.HBox(self.main_views), self.pair_box,
            W.HBox([self.region_x, self.region_y]), W.HBox([self.top_region_button, self.drivers_button]),
            self.drivers,
        ]
        self._init_method()
        self._init_channel_mode()
        self.domain.observe(self._on_domain, names="value")
        self.image.observe(self._on_image, names="value")
        self.layer.observe(self._on_layer, names="value")
        self.channel_mode.observe(self._on_channel_mode, names="value")
        self.channel.observe(lambda c: self._redraw(main=True, pair=True), names="value")
        self.top_channel.observe(self._on_top_channel, names="value")
        self.method.observe(self._on_method, names="value")
        self.alpha.observe(lambda c: self._redraw(main=True), names="value")
        self.threshold.observe(lambda c: self._redraw(main=True), names="value")
        self.region_x.observe(lambda c: self._redraw(main=True), names="value")
        self.region_y.observe(lambda c: self._redraw(main=True), names="value")
        self.drivers_button.on_click(lambda b: self.show_drivers())
        self.top_region_button.on_click(lambda b: self.select_top_region())
        self._redraw(main=True, pair=True)

    # -- setup ------------------------------------------------------------------------------
    def _init_method(self):
        v = self.view
        if not v.methods():
            self.threshold.disabled = True
            return
        m = self.method.value
        thr = v.threshold(m, self.image.value)
        if thr is None or not thr > 0:  # no calibrated threshold: half the current image's top score
            score = v.score(m, self.image.value)
            top = float(np.nanmax(score)) if np.isfinite(score).any() else 1.0
            thr = 0.5 * top if top > 0 else 1.0
        # a fixed range around the threshold: reading every map for the true maximum would make
        # opening the Explorer on a large store slow; scores are heavy-tailed, hence 1e4
        lo, hi = np.log10(thr) - 2, np.log10(thr) + 4
        self._hold = True
        try:
            self.threshold.min, self.threshold.max = -30, 30  # widen first: the value must stay inside
            self.threshold.value = thr
            self.threshold.min, self.threshold.max = lo, hi
        finally:
            self._hold = False

    def _init_channel_mode(self):
        why = stats_available(self.view)
        if why is not None:  # e.g. one domain: effect sizes need both
            self.channel_mode.disabled = True
            self.channel_mode.tooltip = f"top channels by effect size unavailable: {why}"

    # -- handlers ---------------------------------------------------------------------------
    def _on_domain(self, change):
        opts = self.view.images(change["new"])
        cur = self.image.value
        self._hold = True
        try:
            self.image.options = opts
            self.image.value = cur if cur in opts else opts[0]
        finally:
            self._hold = False
        self._redraw(main=True, pair=True)

    def _on_image(self, change):
        if self.view.methods() and self.view.per_image_threshold(self.method.value):
            self._init_method()  # each image has its own calibrated threshold
        self._redraw(main=True, pair=True)

    def _on_layer(self, change):
        self._hold = True
        try:
            self.channel.max = self.view.channels(change["new"]) - 1
            self.channel.value = min(self.channel.value, self.channel.max)
            if self.channel_mode.value != "index":
                self._fill_top_channels()
        finally:
            self._hold = False
        self._redraw(main=True, pair=True)

    def _fill_top_channels(self):
        table, why = self.view.stats()
        if table is None:
            self.status.value = note_html(f"top channels by effect size unavailable: {why}")
            self.top_channel.options = []
            return
        table = table.channels
        t = table[table["layer"] == self.layer.value].copy()
        t = t.reindex(t["effect_size"].abs().sort_values(ascending=False).index).head(TOP_CHANNELS)
        self.top_channel.options = [(f"ch {int(r.channel)} (d = {r.effect_size:+.2f})", int(r.channel))
                                    for r in t.itertuples()]
        if len(t):
            self.top_channel.value = int(t["channel"].iloc[0])
            self.channel.value = int(t["channel"].iloc[0])

    def _on_channel_mode(self, change):
        top = change["new"] != "index"
        self.top_channel.layout.display = None if top else "none"
        self.channel.layout.display = "none" if top else None
        if top:
            self._hold = True
            try:
                self._fill_top_channels()
            finally:
                self._hold = False
            self._redraw(main=True, pair=True)

    def _on_top_channel(self, change):
        if change["new"] is None:
            return
        self.channel.value = int(change["new"])  # redraws through the channel observer

    def _on_method(self, change):
        self._init_method()
        self._redraw(main=True)

    # -- drawing ----------------------------------------------------------------------------
    @property
    def box(self) -> tuple[int, int, int, int]:
        (x0, x1), (y0, y1) = self.region_x.value, self.region_y.value
        return x0, max(x1, x0 + 1), y0, max(y1, y0 + 1)

    def _redraw(self, main=False, pair=False):
        if self._hold:
            return
        t = time.perf_counter()
        if main:
            for view, panel in zip(self.main_views, self.main_panels()):
                view.show(panel)
        if pair:
            panels = self.pair_panels()
            self.pair_box.layout.display = None if panels else "none"
            for view, panel in zip(self.pair_views, panels or []):
                view.show(panel)
        self.last_redraw_s = time.perf_counter() - t

    def _rgb(self, image):
        rgb = self.view.rgb(image)
        if rgb is None:
            self.status.value = note_html(f"source image not found: {self.view.table.at[image, 'path']}")
            return note_rgb(self.view.input_size)
        return rgb

    def main_panels(self) -> list[Panel]:
        """image | feature map | unrealistic-detail overlay for the current selection."""
        v, im, layer, ch = self.view, self.image.value, self.layer.value, int(self.channel.value)
        self.status.value = ""
        rgb = self._rgb(im)
        out = [Panel(f"{im} ({v.domain(im)})", draw_box(rgb, self.box))]
        fm = v.fmap(im, layer, ch)
        lo, hi = _finite_range(fm)
        out.append(Panel(f"{layer} · channel {ch} ({fm.shape[0]}×{fm.shape[1]} cells)",
                         upsample(colorize(fm, "viridis", lo, hi), v.input_size),
                         ColorBar("viridis", lo, hi, "activation")))
        out.append(self._overlay_panel(im, rgb))
        return out

    def _overlay_panel(self, im, rgb) -> Panel:
        v = self.view
        if not v.methods():
            return Panel("unrealistic-detail overlay", rgb,
                         note="no unrealistic-detail maps in this store: run `fakesegment maps --store ...`")
        m = self.method.value
        score = v.score(m, im)
        if not np.isfinite(score).any():
            return Panel(f"{m} overlay", rgb, note=f"the '{m}' map does not apply to {v.domain(im)} images")
        thr = float(self.threshold.value)
        hit = np.nan_to_num(score, nan=-np.inf) > thr  # the maps' own mask rule: score > threshold
        if not hit.any():  # no colour on the image: a colour bar would span threshold..threshold
            return Panel(f"{m} score > {thr:.3g}: 0.0% of the image", rgb,
                         note=f"no location of this image scores above {thr:.3g} (its maximum is "
                              f"{float(np.nanmax(score)):.3g}); lower the threshold to see more")
        lo, hi, log = score_range(score, thr)
        return Panel(f"{m} score > {thr:.3g}: {100 * hit.mean():.1f}% of the image",
                     overlay(rgb, score, hit, lo, hi, self.alpha.value, log=log),
                     ColorBar("magma", lo, hi, "unrealistic score", log))

    def pair_panels(self) -> list[Panel] | None:
        """synthetic | real | discrepancy of the current layer/channel, or None without a pair."""
        v, im, layer, ch = self.view, self.image.value, self.layer.value, int(self.channel.value)
        other = v.partner(im)
        if other is None:
            return None
        syn, real = (im, other) if v.domain(im) == "synthetic" else (other, im)
        diff = v.fmap(syn, layer, ch) - v.fmap(real, layer, ch)
        lim = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
        lim = lim if lim > 0 else 1.0
        return [Panel(f"synthetic: {syn}", self._rgb(syn)), Panel(f"real: {real}", self._rgb(real)),
                Panel(f"discrepancy {layer} · ch {ch} (mean |Δ| {np.nanmean(np.abs(diff)):.3g})",
                      upsample(colorize(diff, "RdBu_r", -lim, lim), v.input_size),
                      ColorBar("RdBu_r", -lim, lim, "synthetic − real"))]

    def figure(self):
        """The current view as a static matplotlib figure (reports, HTML export)."""
        panels = self.main_panels() + (self.pair_panels() or [])
        return panels_figure(panels, ncols=3, suptitle=f"Explorer: {self.image.value} · layer {self.layer.value} · "
                                                        f"channel {int(self.channel.value)}")

    def static_html(self) -> str:
        """Banner, header, the current figure and region drivers as self-contained HTML."""
        v = self.view
        return (banner_html(v.attrs) + header_html(v, "Explorer") + "<br>" + self.status.value
                + figure_html(self.figure(), f"Explorer view of {self.image.value}") + self.drivers.value)

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        return static_fallback(data, self)

    # -- region -----------------------------------------------------------------------------
    def select_top_region(self, size: int | None = None):
        """Move the region to the window of highest mean score of the current map."""
        v = self.view
        if not v.methods():
            return
        score = v.score(self.method.value, self.image.value)
        if not np.isfinite(score).any():
            self.drivers.value = note_html("the current map does not apply to this image")
            return
        H, Wd = v.input_size
        size = size or max(8, min(H, Wd) // 5)
        s = np.nan_to_num(score, nan=0.0)
        # box mean through an integral image
        ii = np.pad(s, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        sums = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
        y0, x0 = np.unravel_index(int(np.argmax(sums)), sums.shape)
        self._hold = True
        try:
            self.region_x.value = (int(x0), int(x0) + size)
            self.region_y.value = (int(y0), int(y0) + size)
        finally:
            self._hold = False
        self._redraw(main=True)
        self.show_drivers()

    def show_drivers(self, top: int = 10):
        """What drives the selected region.

        With a map that scores this image: the exact split of the region's mean score into
        layers and channels (:func:`fakesegment_nb.segments.attribute`). Otherwise: the channels
        whose mean activation in the region departs most from real
        (:func:`fakesegment_nb.regions.region_drivers`). Returns the channel table shown.
        """
        v, im = self.view, self.image.value
        x0, x1, y0, y1 = self.box
        where = f"x {x0}–{x1}, y {y0}–{y1}"
        fmt = dict(index=False, float_format=lambda x: f"{x:.3g}")
        parts, df = [], None
        m = self.method.value if v.methods() else None
        # attribution re-reads the real images the map was made from (the twin, for paired)
        scored = m is not None and v.two_domains and np.isfinite(v.score(m, im)).any()
        if scored and segments is not None and (m != "paired" or v.partner(im)):
            try:
                att = segments.attribute(v.tree, im, box=(y0, x0, y1, x1), method=m, top=top)
            except FakesegmentError as exc:
                parts.append(note_html(str(exc)))
            else:
                df = att.channels.head(top)
                parts.append(f"<b>Layers driving the {m} score in {where}</b> (mean score {att.score:.3g})"
                             + att.layers.to_html(**fmt))
                parts.append(f"<b>Channels driving it</b> (share of the region's score)" + df.to_html(**fmt))
        if df is None:
            try:
                df = region_drivers(v, im, self.box, top=top)
            except FakesegmentError as exc:
                parts.append(note_html(str(exc)))
            else:
                ref = "its paired real image" if v.partner(im) else "the mean of the real images"
                parts.append(f"<b>Channels departing most from {ref} in {where}</b> "
                             "(z = difference / spread of the real images)" + df.to_html(**fmt))
        self.drivers.value = ("<div style='display:flex;gap:24px;align-items:flex-start'>"
                              + "".join(f"<div>{p}</div>" for p in parts) + "</div>")
        return df


def _finite_range(a: np.ndarray) -> tuple[float, float]:
    f = a[np.isfinite(a)]
    if f.size == 0:
        return 0.0, 1.0
    lo, hi = float(f.min()), float(f.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
