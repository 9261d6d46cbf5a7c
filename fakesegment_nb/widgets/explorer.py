"""``Explorer``: one image at a time, at its own aspect ratio -- the image and a feature map,
every map of the store side by side (where it looks rendered, which details are unusual, what
differs from its real twin), and for a pair synthetic | real | discrepancy.

This is the wiring: controls, their observers and what each redraws. What is drawn comes from
the pure functions of :mod:`fakesegment_nb.widgets.explorer_panels`.
"""

from __future__ import annotations

import time

import ipywidgets as W

from . import explorer_panels as P
from .markup import banner_html, header_html, note_html
from .panelview import PanelView
from .render import figure_html, static_fallback
from .storeview import StoreView

__all__ = ["Explorer"]


class Explorer(W.VBox):
    """Browse images, layers and channels of a store.

    Parameters
    ----------
    store : store path/URL, DataTree or :class:`StoreView`.
    image, layer, method : initial selection (defaults: first synthetic image, first layer,
        first map method in the store: ``domain``, ``reference``, ``paired`` in that order).

    The domain buttons pick which images the image list offers: all, real, synthetic, or in a
    store of several synthetic sets each set by name.

    Every map of the store is drawn over the image; ``method`` is the one the threshold slider,
    the region search and the drivers apply to. The region is in pixels of the original image.

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

        # a store of several synthetic sets names each set beside "real" (the set's images only);
        # a set's value is ("set", name), since a set may be named "all"
        if len(v.sets) < 2:
            domains, tips = ["all", *v.domains], ["all", *v.domains]
        else:
            domains = [("all", "all"), ("real", "real"), *((s, ("set", s)) for s in v.sets)]
            tips = ["all", "real", *(f"synthetic set {s}" for s in v.sets)]
        first = image or (v.images("synthetic") or v.images())[0]
        self.domain = W.ToggleButtons(options=domains, value="all", description="domain", tooltips=tips)
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
        # distances are heavy-tailed (a typical discrepancy is ~1, outliers reach 1e4): a log
        # slider; maps with negative scores (e.g. log-odds) get the linear one
        self.threshold_log = W.FloatLogSlider(base=10, min=-2, max=0, step=0.02, value=0.5, description="threshold",
                                              continuous_update=False, readout_format=".3g", disabled=not methods)
        self.threshold_linear = W.FloatSlider(min=0.0, max=1.0, step=0.01, value=0.5, description="threshold",
                                              continuous_update=False, readout_format=".3g", disabled=not methods,
                                              layout=W.Layout(display="none"))
        self.threshold = self.threshold_log  # the one shown
        h, w = v.original_size(first)
        self.region_x = W.IntRangeSlider(min=0, max=w, value=(w // 4, w // 2), description="region x",
                                         continuous_update=False)
        self.region_y = W.IntRangeSlider(min=0, max=h, value=(h // 4, h // 2), description="region y",
                                         continuous_update=False)
        self.drivers_button = W.Button(description="Which layers/channels drive it?",
                                       layout=W.Layout(width="260px"))
        self.top_region_button = W.Button(description="Select top-scoring region", disabled=not methods,
                                          layout=W.Layout(width="220px"))
        self.drivers = W.HTML()
        self.status = W.HTML()
        self.main_views = [PanelView(f"fakesegment-explorer-{n}") for n in ("image", "map")]
        self.map_views = [PanelView("fakesegment-explorer-overlay", extra=f"fakesegment-explorer-overlay-{m}")
                          for m in (methods or ["none"])]
        self.pair_views = [PanelView(f"fakesegment-explorer-{n}") for n in ("synthetic", "real", "discrepancy")]
        self.pair_box = W.VBox([W.HTML("<b>Pair: synthetic | real | discrepancy</b>"), W.HBox(self.pair_views)])

        self.children = [
            W.HTML(banner_html(v.attrs)),
            W.HTML(header_html(v, "Explorer")),
            W.HBox([self.domain]), W.HBox([self.image, self.layer]),
            W.HBox([self.channel_mode, self.channel, self.top_channel]),
            self.status, W.HBox(self.main_views),
            W.HBox([self.method, self.alpha, self.threshold_log, self.threshold_linear]),
            W.HTML("<b>Maps</b> (heat: the score, colour bar per map; outline: the mask, score above the "
                   "threshold)"), W.HBox(self.map_views), self.pair_box,
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
        self.alpha.observe(lambda c: self._redraw(maps=True), names="value")
        self.threshold_log.observe(lambda c: self._redraw(maps=True), names="value")
        self.threshold_linear.observe(lambda c: self._redraw(maps=True), names="value")
        self.region_x.observe(lambda c: self._redraw(main=True), names="value")
        self.region_y.observe(lambda c: self._redraw(main=True), names="value")
        self.drivers_button.on_click(lambda b: self.show_drivers())
        self.top_region_button.on_click(lambda b: self.select_top_region())
        self._redraw(main=True, maps=True, pair=True)

    # -- setup ------------------------------------------------------------------------------
    def _init_method(self):
        if not self.view.methods():
            return
        thr, lo, hi, log = P.overlay_threshold(self.view, self.method.value, self.image.value)
        self.threshold = self.threshold_log if log else self.threshold_linear
        self.threshold_log.layout.display = None if log else "none"
        self.threshold_linear.layout.display = "none" if log else None
        self._hold = True
        try:
            t = self.threshold
            t.min, t.max = (-30, 30) if log else (-1e30, 1e30)  # widen first: the value must stay inside
            if not log:
                t.step = (hi - lo) / 400
            t.value = thr
            t.min, t.max = lo, hi
        finally:
            self._hold = False

    def _init_channel_mode(self):
        why = self.view.stats_missing()
        if why is not None:  # e.g. one domain: effect sizes need both
            self.channel_mode.disabled = True
            self.channel_mode.tooltip = f"top channels by effect size unavailable: {why}"

    # -- handlers ---------------------------------------------------------------------------
    def _on_domain(self, change):
        pick = change["new"]
        opts = self.view.set_images(pick[1]) if isinstance(pick, tuple) else self.view.images(pick)
        cur = self.image.value
        self._hold = True
        try:
            self.image.options = opts
            self.image.value = cur if cur in opts else opts[0]
        finally:
            self._hold = False
        if self.image.value != cur:
            self._on_image({"old": cur, "new": self.image.value})
        else:
            self._redraw(main=True, maps=True, pair=True)

    def _on_image(self, change):
        if self._hold:
            return
        self._rescale_region(change.get("old"), change["new"])
        if self.drivers.value:  # they were another image's
            self.drivers.value = note_html('another image: press "Which layers/channels drive it?" for this one')
        if self.view.methods():
            self._init_method()  # each image has its own calibrated threshold and score range
        self._redraw(main=True, maps=True, pair=True)

    def _rescale_region(self, old: str | None, new: str):
        """Keep the region at the same place relative to the image when the image changes size."""
        if old is None or old not in self.view.table.index:
            return
        (h0, w0), (h, w) = self.view.original_size(old), self.view.original_size(new)
        if (h0, w0) == (h, w):
            return
        (x0, x1), (y0, y1) = self.region_x.value, self.region_y.value
        self._hold = True
        try:
            for slider, (a, b), old_n, n in ((self.region_x, (x0, x1), w0, w), (self.region_y, (y0, y1), h0, h)):
                lo, hi = round(a * n / old_n), max(round(b * n / old_n), round(a * n / old_n) + 1)
                slider.max = max(slider.max, n)
                slider.value = (min(lo, n - 1), min(hi, n))
                slider.max = n
        finally:
            self._hold = False

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
        options, why = P.top_channels(self.view, self.layer.value)
        if why is not None:
            self.status.value = note_html(f"top channels by effect size unavailable: {why}")
        self.top_channel.options = options
        if options:
            self.top_channel.value = options[0][1]
            self.channel.value = options[0][1]

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
        self._redraw(maps=True)

    # -- drawing ----------------------------------------------------------------------------
    @property
    def box(self) -> tuple[int, int, int, int]:
        """The region, ``(x0, x1, y0, y1)`` in pixels of the original image."""
        (x0, x1), (y0, y1) = self.region_x.value, self.region_y.value
        return x0, max(x1, x0 + 1), y0, max(y1, y0 + 1)

    @property
    def input_box(self) -> tuple[int, int, int, int]:
        """The region in network-input pixels (the maps' grid)."""
        return P.input_box(self.view, self.image.value, self.box)

    @property
    def selection(self) -> P.Selection:
        """What the controls select, for the panel functions."""
        return P.Selection(image=self.image.value, layer=self.layer.value, channel=int(self.channel.value),
                           method=self.method.value if self.view.methods() else None,
                           threshold=float(self.threshold.value), alpha=float(self.alpha.value), box=self.box)

    def _redraw(self, main=False, maps=False, pair=False):
        if self._hold:
            return
        t = time.perf_counter()
        sel = self.selection
        if main or pair:
            self.status.value = P.status_html(self.view, sel)
        if main:
            for view, panel in zip(self.main_views, P.main_panels(self.view, sel)):
                view.show(panel)
        if maps:
            for view, panel in zip(self.map_views, P.map_panels(self.view, sel)):
                view.show(panel)
        if pair:
            panels = P.pair_panels(self.view, sel)
            self.pair_box.layout.display = None if panels else "none"
            for view, panel in zip(self.pair_views, panels or []):
                view.show(panel)
        self.last_redraw_s = time.perf_counter() - t

    def figure(self):
        """The current view as a static matplotlib figure (reports, HTML export)."""
        return P.explorer_figure(self.view, self.selection)

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
        """Move the region to the window of highest mean score of the current map, and show its drivers."""
        if not self.view.methods():
            return
        box = P.top_region(self.view, self.method.value, self.image.value, size)
        if box is None:
            self.drivers.value = note_html("the current map does not apply to this image")
            return
        x0, x1, y0, y1 = box  # image pixels
        self._hold = True
        try:
            self.region_x.value = (x0, x1)
            self.region_y.value = (y0, y1)
        finally:
            self._hold = False
        self._redraw(main=True)
        self.show_drivers()

    def show_drivers(self, top: int = 10):
        """Show what drives the selected region (see :func:`.explorer_panels.drivers_html`);
        returns the channel table shown."""
        self.drivers.value, df = P.drivers_html(self.view, self.selection, top)
        return df
