"""``Gallery``: the synthetic images a map flags most, in a grid, each with every map of the store
side by side at the image's own aspect ratio."""

from __future__ import annotations

import time

import ipywidgets as W
import numpy as np

from ..errors import FakesegmentError

from .explorer import Explorer
from .mappanels import area_words, map_panel, map_question, not_scored
from .markup import banner_html, esc, header_html, note_html
from .render import Panel, figure_html, panels_figure, png, static_fallback
from .storeview import StoreView

__all__ = ["Gallery"]

SORT_KEYS = {"flagged area (mask share)": "area", "max score": "max", "mean score": "mean",
             "least realistic (images.csv)": "realism"}
THUMB = 160


class Gallery(W.VBox):
    """The ``k`` synthetic images whose ``method`` map flags most, in a grid.

    Parameters
    ----------
    store : store path/URL, DataTree or :class:`StoreView`.
    method : the map that ranks the images (default: the store's first: ``domain``,
        ``reference``, ``paired`` in that order).
    k : number of images shown.
    explorer : an :class:`Explorer` to open images in (default: one is made on the first click).
    set_name : the synthetic set whose images are ranked (default: every set's; a dropdown
        chooses, on a store of several sets).

    Each card shows every map of the store over the image at its own aspect ratio, titled by the
    question it answers ("looks rendered here", "unusual details here", "differs from its real
    twin here") with the share of the image its mask covers: heat map over the image, mask
    outlined. Sort by the ranking map's flagged area (its mask's share of the image), max or
    mean score, or by the per-image realism score of ``images.csv`` (fused over layers; needs no
    pairs and no localised artefacts); filter by a substring of the image id. Each card's button
    opens that image in the Explorer below.
    """

    def __init__(self, store, method: str | None = None, k: int = 12, explorer=None, set_name: str | None = None):
        super().__init__()
        self.add_class("fakesegment-gallery")
        self.view = v = StoreView(store)
        self.explorer = explorer
        sets = ["all", *v.sets] if len(v.sets) > 1 else (v.sets or ["all"])
        if set_name is not None and set_name not in sets:
            raise FakesegmentError(f"the store has no synthetic set {set_name!r}; it has {', '.join(v.sets) or 'none'}")
        self.set_name = W.Dropdown(options=sets, value=set_name or sets[0], description="set",
                                   disabled=len(sets) < 2)
        self.last_redraw_s = 0.0
        methods = v.methods()
        self.method = W.Dropdown(options=methods or ["(no maps)"], value=method or (methods or ["(no maps)"])[0],
                                 description="rank by", disabled=not methods)
        self.sort = W.Dropdown(options=list(SORT_KEYS), value="flagged area (mask share)", description="sort by")
        self.descending = W.Checkbox(value=True, description="largest first", indent=False)
        self.filter = W.Text(value="", description="filter", placeholder="part of the image id",
                             continuous_update=False)
        self.k = W.BoundedIntText(value=k, min=1, max=max(1, len(v.images("synthetic"))), description="k",
                                  layout=W.Layout(width="140px"))
        self.alpha = 0.6
        card = max(1, len(methods)) * (THUMB + 8) + 12
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns=f"repeat(auto-fill, {card}px)",
                                              grid_gap="12px"))
        self.message = W.HTML()
        self.explorer_box = W.VBox()
        self.shown: list[str] = []
        controls = [self.method, self.sort, self.descending, self.set_name, self.filter, self.k]
        self.children = [W.HTML(banner_html(v.attrs)), W.HTML(header_html(v, "Gallery")),
                         W.HBox(controls[:3]), W.HBox(controls[3:]), self.message, self.grid, self.explorer_box]
        why = self._unavailable()
        if why:
            for c in controls:
                c.disabled = True
            self.message.value = note_html(why)
            return
        for c in controls:
            c.observe(lambda ch: self.refresh(), names="value")
        self.refresh()

    def _unavailable(self) -> str | None:
        v = self.view
        if not v.methods():
            return "no unrealistic-detail maps in this store: run `fakesegment maps --store ...` to make them"
        if not v.images("synthetic"):
            return "this store holds no synthetic images; the gallery ranks synthetic images by their maps"
        return None

    def realism(self):
        """Per synthetic image, the fused realism score of ``images.csv`` (NaN when the
        statistics are unavailable)."""
        tables, _ = self.view.stats()
        if tables is None or tables.images.empty:
            return None
        fused = tables.images[tables.images["layer"] == "fused"]
        return fused.set_index("image")["score"].astype(float)

    def ranking(self):
        """The summary table (area, max, mean map score and the realism score per synthetic
        image), filtered and sorted as chosen."""
        t = self.view.map_summary(self.method.value)
        if self.set_name.value != "all":
            t = t[t.index.isin(self.view.set_images(self.set_name.value))]
        key = SORT_KEYS[self.sort.value]
        if key == "realism":
            r = self.realism()
            t = t.assign(realism=np.nan if r is None else r.reindex(t.index).to_numpy())
        if self.filter.value:
            t = t[t.index.str.contains(self.filter.value, regex=False)]
        if key == "area" and t["area"].isna().all():
            key = "max"  # no masks and no calibrated threshold: rank by score
        return t.sort_values(key, ascending=not self.descending.value, na_position="last")

    def refresh(self):
        t0 = time.perf_counter()
        table = self.ranking().head(int(self.k.value))
        self.shown = list(table.index)
        self.message.value = "" if len(table) else note_html("no synthetic image matches the filter")
        self.grid.children = [self._card(im, row) for im, row in table.iterrows()]
        self.last_redraw_s = time.perf_counter() - t0

    def _panels(self, image: str) -> list[Panel]:
        """Every map of the store over ``image`` at its calibrated threshold."""
        return [map_panel(self.view, m, image, alpha=self.alpha) for m in self.view.methods()]

    def _caption(self, image: str, row) -> str:
        """The image id, each map's share of the image, and the ranking figures."""
        shares = []
        for m in self.view.methods():
            row_m = self.view.image_summary(m, image)
            if row_m is not None:
                shares.append(area_words(m, row_m["area"]).replace("of the image ", ""))
        area = "n/a" if np.isnan(row["area"]) else f"{100 * row['area']:.1f}%"
        realism = f" · realism {row['realism']:.3g}" if "realism" in row and np.isfinite(row["realism"]) else ""
        in_set = f"set {self.view.set_of(image)} · " if len(self.view.sets) > 1 else ""
        return (f"{in_set}{image}\n" + (" · ".join(shares) + "\n" if shares else "")
                + f"{self.method.value} area {area} · max {row['max']:.3g} · mean {row['mean']:.3g}{realism}")

    def _card(self, image: str, row) -> W.VBox:
        thumbs = []
        for m, p in zip(self.view.methods(), self._panels(image)):
            summary = self.view.image_summary(m, image)
            line = area_words(m, summary["area"]) if summary is not None else not_scored(self.view, m, image)
            head = f"<b>{esc(map_question(m))}</b><br>{esc(line)}"
            thumbs.append(W.VBox([W.HTML(f"<div style='font-size:11px;line-height:1.3;width:{THUMB}px;min-height:58px'>"
                                         f"{head}</div>"),
                                  W.Image(value=png(p.rgb), format="png",
                                          layout=W.Layout(width=f"{THUMB}px", height="auto", max_height=f"{THUMB}px",
                                                          object_fit="contain"))],
                                 layout=W.Layout(margin="0 8px 0 0")))
        cap = W.HTML("<div style='font-size:11px;line-height:1.3;overflow-wrap:anywhere'>"
                     + esc(self._caption(image, row)).replace("\n", "<br>") + "</div>")
        btn = W.Button(description="open in Explorer", layout=W.Layout(width=f"{THUMB}px"))
        btn.on_click(lambda b, im=image: self.open_image(im))
        return W.VBox([cap, W.HBox(thumbs), btn])

    def open_image(self, image: str):
        """Show ``image`` in the Explorer (made on first use) below the grid."""
        if self.explorer is None:
            self.explorer = Explorer(self.view, image=image, method=self.method.value)
        else:
            ex = self.explorer
            ex.domain.value = "all"
            if self.method.value in ex.method.options:
                ex.method.value = self.method.value
            ex.image.value = image
        self.explorer_box.children = [self.explorer]
        return self.explorer

    def share_table(self):
        """The shown images (rows, in order) by map (columns titled by their questions): the share
        of the image inside the map's mask; NaN where the map does not score the image."""
        import pandas as pd

        cols = {}
        for m in self.view.methods():
            rows = [self.view.image_summary(m, im) for im in self.shown]
            cols[f"{map_question(m)} ({m})"] = [np.nan if r is None else r["area"] for r in rows]
        return pd.DataFrame(cols, index=pd.Index(self.shown, name="image"))

    # -- static ---------------------------------------------------------------------------
    def figure(self):
        """The shown images as a static figure: one row per image, one column per map."""
        rows = []
        for im in self.shown:
            panels = self._panels(im)
            in_set = f"[{self.view.set_of(im)}] " if len(self.view.sets) > 1 else ""
            panels[0].title = f"{in_set}{im}\n{panels[0].title}"
            rows.append(panels)
        if not rows:
            rows = [[Panel("no images", note="nothing to show")]]
        which = ("" if len(self.view.sets) < 2 else
                 " of every set" if self.set_name.value == "all" else f" of set {self.set_name.value}")
        return panels_figure(rows, size=3.0, suptitle=f"Gallery: top {len(self.shown)} synthetic images{which} by "
                                                      f"{self.sort.value} of the {self.method.value} map; heat: the "
                                                      "score, outline: the mask (score above its calibrated threshold)")

    def static_html(self) -> str:
        v = self.view
        head = banner_html(v.attrs) + header_html(v, "Gallery") + "<br>"
        if self._unavailable():
            return head + note_html(self._unavailable())
        shares = self.share_table().map(lambda v: "n/a" if not np.isfinite(v) else f"{100 * v:.1f}%")
        return (head + figure_html(self.figure(), "gallery of synthetic images")
                + "<p><b>Share of each image inside each map's mask</b></p>" + shares.to_html(escape=True))

    def _repr_mimebundle_(self, **kwargs):
        return static_fallback(super()._repr_mimebundle_(**kwargs), self)
