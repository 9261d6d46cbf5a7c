"""``DomainDashboard``: how far each layer sees synthetic from real, channel by channel."""

from __future__ import annotations

import time

import ipywidgets as W
import numpy as np

from ..errors import FakesegmentError

from .markup import banner_html, header_html, note_html, store_label
from .plots import (METRIC_LABELS, channel_distribution_figure, effect_heatmap_figure, gap_profile_figure,
                    layer_distance_figure, pair_table_view)
from .render import figure_html, figure_png, static_fallback
from .storeview import LRU, StoreView

__all__ = ["DomainDashboard"]

PAIR_ROWS = 200
STATIC_PAIR_ROWS = 20  # static views (reports) show the top of the table


class DomainDashboard(W.VBox):
    """The gap profile (classifier AUROC and FID over its noise floor per layer, with
    intervals and significance), per-layer distances (bars), one channel's real vs synthetic distribution (violins), a
    layer x channel effect-size heat map and the sortable MSE/SSIM pair table.

    Parameters
    ----------
    store : store path/URL, DataTree or :class:`StoreView`.
    set_name : the synthetic set the channel, effect-size and pair panels show (default: the
        store's first; a dropdown chooses another). The gap profile draws one line per set and
        the distances one bar per set, each named by its set.

    The tables come from :mod:`fakesegment_nb.stats` (its cache in the store when fresh);
    on a store with one domain the panels that compare domains say so instead.
    """

    def __init__(self, store, set_name: str | None = None):
        super().__init__()
        self.add_class("fakesegment-dashboard")
        self.view = v = StoreView(store)
        self.last_redraw_s = 0.0
        self._png = LRU(64)
        self.tables, self.why = v.stats()
        sets = v.sets or ["(none)"]
        if set_name is not None and set_name not in sets:
            raise FakesegmentError(f"the store has no synthetic set {set_name!r}; it has {', '.join(v.sets) or 'none'}")
        self.set_name = W.Dropdown(options=sets, value=set_name or sets[0], description="set")
        self.profile = W.Image(format="png")
        self.profile_notes = W.HTML()
        self.metric = W.ToggleButtons(options=[m for m in METRIC_LABELS], value="fid", description="distance")
        self.bars = W.Image(format="png")
        self.layer = W.Dropdown(options=v.layers, value=v.layers[0], description="layer")
        self.channel = W.Dropdown(options=[], description="channel", layout=W.Layout(width="320px"))
        self.violin = W.Image(format="png")
        self.heatmap = W.Image(format="png")
        self.pair_layer = W.Dropdown(options=["all", *v.layers], value="all", description="layer")
        self.pair_sort = W.Dropdown(options=["mse", "ssim", "cosine", "image"], value="mse", description="sort by")
        self.pair_ascending = W.Checkbox(value=False, description="ascending", indent=False)
        self.pair_html = W.HTML(layout=W.Layout(max_height="360px", overflow="auto"))
        sections = {
            "Gap profile: one scale, with uncertainty": [self.profile, self.profile_notes],
            "Per-layer distance, real vs synthetic": [self.metric, self.bars],
            "One channel, real vs synthetic": [W.HBox([self.set_name, self.layer, self.channel]), self.violin],
            "Effect size, layer × channel": [self.heatmap],
            "Pairs: feature-map MSE / SSIM / cosine": [W.HBox([self.pair_layer, self.pair_sort,
                                                                self.pair_ascending]), self.pair_html],
        }
        if self.tables is None:  # say what is missing in place of each panel
            msg = f"domain statistics unavailable: {self.why}"
            for title in list(sections)[:4]:
                sections[title] = [W.HTML(note_html(msg))]
            sections[list(sections)[4]] = [W.HTML(self._pairs_note())]
        self.children = [W.HTML(banner_html(v.attrs)), W.HTML(header_html(v, "Domain dashboard"))] + [
            w for title, body in sections.items()
            for w in [W.HTML(f"<h4 style='margin:10px 0 2px'>{title}</h4>"), *body]]
        if self.tables is None:
            for c in (self.metric, self.set_name, self.layer, self.channel, self.pair_layer, self.pair_sort,
                      self.pair_ascending):
                c.disabled = True
            return
        self.metric.observe(lambda c: self.draw_bars(), names="value")
        self.layer.observe(lambda c: self._fill_channels(), names="value")
        self.set_name.observe(lambda c: self._set_changed(), names="value")
        self.channel.observe(lambda c: self.draw_violin(), names="value")
        for c in (self.pair_layer, self.pair_sort, self.pair_ascending):
            c.observe(lambda ch: self.draw_pairs(), names="value")
        self.profile.value = figure_png(self.profile_figure())
        self.profile_notes.value = self.profile_notes_html()
        self.draw_bars()
        self._fill_channels()
        self.draw_heatmap()
        self.draw_pairs()

    def _set_changed(self):
        self._fill_channels()
        self.draw_heatmap()
        self.draw_pairs()

    def _pairs_note(self) -> str:
        if not self.view.partner_count():
            return note_html("no pairs in this store: pair synthetic and real images by file stem or --pairs CSV")
        return note_html(f"pair table unavailable: {self.why}")

    # -- panels -----------------------------------------------------------------------------
    def _timed(fn):
        def wrapper(self, *a, **k):
            t = time.perf_counter()
            out = fn(self, *a, **k)
            self.last_redraw_s = time.perf_counter() - t
            return out

        wrapper.__doc__ = fn.__doc__
        return wrapper

    def profile_table(self):
        """The layers table with the gap table's columns (c2st interval, chance level, notes), one
        row per (set, layer)."""
        return self.tables.layers.merge(self.tables.gap, on=["set", "layer"], how="left")

    def profile_figure(self):
        """One line per synthetic set, named by the set (by the store's network when it has one set)."""
        t = self.profile_table()
        sets = list(dict.fromkeys(t["set"]))
        if len(sets) == 1:
            return gap_profile_figure({store_label(self.view.attrs): t})
        return gap_profile_figure({s: t[t["set"] == s].reset_index(drop=True) for s in sets},
                                  title=f"Gap profile per synthetic set: {store_label(self.view.attrs)}\n"
                                        "filled / * = permutation p < 0.05; bars = 90% bootstrap intervals")

    def _in_set(self, df):
        """``df``'s rows of the chosen set."""
        return df[df["set"] == self.set_name.value]

    def profile_notes_html(self) -> str:
        """Why some of the profile's values are NaN, one line per layer ('' when none are)."""
        t = self.profile_table()
        several = t["set"].nunique() > 1
        notes = [f"{r.set + ' · ' if several else ''}{r.layer}: {r.note}" for r in t.itertuples()
                 if isinstance(r.note, str) and r.note]
        return "".join(note_html(n) for n in notes)

    @_timed
    def draw_bars(self):
        m = self.metric.value
        self.bars.value = self._png.get_or(("bars", m), lambda: figure_png(layer_distance_figure(self.tables.layers, m)))

    def _channel_rows(self):
        t = self._in_set(self.tables.channels)
        return t[t["layer"] == self.layer.value]

    def _fill_channels(self):
        rows = self._channel_rows()
        order = rows.reindex(rows["effect_size"].abs().sort_values(ascending=False, na_position="last").index)
        opts = [(f"ch {int(r.channel)} (d = {r.effect_size:+.2f})" if np.isfinite(r.effect_size)
                 else f"ch {int(r.channel)} (d undefined)", int(r.channel)) for r in order.itertuples()]
        self.channel.unobserve_all("value")
        self.channel.options = opts
        self.channel.value = opts[0][1] if opts else None
        self.channel.observe(lambda c: self.draw_violin(), names="value")
        self.draw_violin()

    def violin_figure(self):
        v, layer, ch = self.view, self.layer.value, self.channel.value
        keep = ((v.table["domain"] == "real") | (v.table["set"] == self.set_name.value)).to_numpy()
        values = v.layer_vectors(layer)[keep, int(ch)]
        d = self._channel_rows().set_index("channel")["effect_size"].get(int(ch))
        title = layer if len(v.sets) < 2 else f"{layer} (set {self.set_name.value})"
        return channel_distribution_figure(values, v.table["domain"].to_numpy()[keep], title, int(ch), d)

    def heatmap_figure(self):
        """Cohen's d per layer and channel of the chosen set."""
        fig = effect_heatmap_figure(self._in_set(self.tables.channels), self.view.layers)
        if len(self.view.sets) > 1:
            ax = fig.axes[0]
            ax.set_title(f"set {self.set_name.value}: " + ax.get_title(), fontsize=11)
        return fig

    @_timed
    def draw_heatmap(self):
        self.heatmap.value = self._png.get_or(("heatmap", self.set_name.value), lambda: figure_png(self.heatmap_figure()))

    @_timed
    def draw_violin(self):
        if self.channel.value is None:
            return
        key = ("violin", self.set_name.value, self.layer.value, int(self.channel.value))
        self.violin.value = self._png.get_or(key, lambda: figure_png(self.violin_figure()))

    def pair_table(self):
        return pair_table_view(self._in_set(self.tables.pairs), self.pair_layer.value, self.pair_sort.value,
                               self.pair_ascending.value)

    def pair_html_table(self, rows: int = PAIR_ROWS) -> str:
        """The sorted pair table as HTML, at most ``rows`` rows."""
        if self.tables.pairs.empty:
            return self._pairs_note()
        t = self.pair_table()
        order = "ascending" if self.pair_ascending.value else "descending"
        in_set = f"set {self.set_name.value}, " if len(self.view.sets) > 1 else ""
        head = (f"<i>{min(rows, len(t))} of {len(t)} rows, {in_set}layer {self.pair_layer.value}, "
                f"sorted by {self.pair_sort.value} ({order})</i>")
        return head + t.head(rows).to_html(index=False, float_format=lambda x: f"{x:.4g}")

    @_timed
    def draw_pairs(self):
        self.pair_html.value = self.pair_html_table()

    # -- static ---------------------------------------------------------------------------
    def static_html(self) -> str:
        v = self.view
        head = banner_html(v.attrs) + header_html(v, "Domain dashboard") + "<br>"
        if self.tables is None:
            return head + note_html(f"domain statistics unavailable: {self.why}") + self._pairs_note()
        titles = [w.value for w in self.children if isinstance(w, W.HTML) and w.value.startswith("<h4")]
        body = [figure_html(self.profile_figure(), "gap profile") + self.profile_notes_html(),
                figure_html(layer_distance_figure(self.tables.layers, self.metric.value), "layer distances"),
                figure_html(self.violin_figure(), "channel distribution") if self.channel.value is not None
                else note_html("no channel to show"),
                figure_html(self.heatmap_figure(), "effect sizes"),
                self.pair_html_table(STATIC_PAIR_ROWS)]
        return head + "".join(t + b for t, b in zip(titles, body))

    def _repr_mimebundle_(self, **kwargs):
        return static_fallback(super()._repr_mimebundle_(**kwargs), self)
