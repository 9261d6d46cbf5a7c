"""``Gallery``: the synthetic images with the largest unrealistic area or score, in a grid."""

from __future__ import annotations

import time

import ipywidgets as W
import numpy as np

from .explorer import Explorer
from .markup import banner_html, esc, header_html, note_html
from .render import Panel, figure_html, note_rgb, overlay, panels_figure, png, score_range, static_fallback
from .storeview import StoreView

__all__ = ["Gallery"]

SORT_KEYS = {"unrealistic area": "area", "max score": "max", "mean score": "mean",
             "least realistic (images.csv)": "realism"}
THUMB = 160


class Gallery(W.VBox):
    """The ``k`` synthetic images whose ``method`` map flags most, overlays in a grid.

    Parameters
    ----------
    store : store path/URL, DataTree or :class:`StoreView`.
    method : map method (default: the store's first).
    k : number of images shown.
    explorer : an :class:`Explorer` to open images in (default: one is made on the first click).

    Sort by unrealistic area (the mask's share of the image), max or mean map score, or by the
    per-image realism score of ``images.csv`` (fused over layers; needs no pairs and no
    localised artefacts); filter by a substring of the image id. Each card's button opens that image in the Explorer below.
    """

    def __init__(self, store, method: str | None = None, k: int = 12, explorer=None):
        super().__init__()
        self.add_class("fakesegment-gallery")
        self.view = v = StoreView(store)
        self.explorer = explorer
        self.last_redraw_s = 0.0
        methods = v.methods()
        self.method = W.Dropdown(options=methods or ["(no maps)"], value=method or (methods or ["(no maps)"])[0],
                                 description="map", disabled=not methods)
        self.sort = W.Dropdown(options=list(SORT_KEYS), value="unrealistic area", description="sort by")
        self.descending = W.Checkbox(value=True, description="largest first", indent=False)
        self.filter = W.Text(value="", description="filter", placeholder="part of the image id",
                             continuous_update=False)
        self.k = W.BoundedIntText(value=k, min=1, max=max(1, len(v.images("synthetic"))), description="k",
                                  layout=W.Layout(width="140px"))
        self.alpha = 0.6
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns=f"repeat(auto-fill, {THUMB + 20}px)",
                                              grid_gap="8px"))
        self.message = W.HTML()
        self.explorer_box = W.VBox()
        self.shown: list[str] = []
        controls = [self.method, self.sort, self.descending, self.filter, self.k]
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

    def _thumb(self, image: str) -> np.ndarray:
        v, m = self.view, self.method.value
        rgb = v.rgb(image)
        rgb = note_rgb(v.input_size) if rgb is None else rgb
        score = v.score(m, image)
        mask = v.mask(m, image)
        thr = v.threshold(m, image)
        hit = mask if mask is not None else (np.nan_to_num(score, nan=-np.inf) > thr if thr is not None
                                             else np.isfinite(score))
        lo, hi, log = score_range(score, thr)
        return overlay(rgb, score, hit, lo, hi, self.alpha, log=log)

    def _caption(self, image: str, row) -> str:
        area = "n/a" if np.isnan(row["area"]) else f"{100 * row['area']:.1f}%"
        realism = f" · realism {row['realism']:.3g}" if "realism" in row and np.isfinite(row["realism"]) else ""
        return f"{image}\narea {area} · max {row['max']:.3g} · mean {row['mean']:.3g}{realism}"

    def _card(self, image: str, row) -> W.VBox:
        img = W.Image(value=png(self._thumb(image)), format="png",
                      layout=W.Layout(width=f"{THUMB}px", height=f"{THUMB}px"))
        cap = W.HTML(f"<div style='font-size:11px;width:{THUMB}px;overflow-wrap:anywhere'>"
                     + esc(self._caption(image, row)).replace("\n", "<br>") + "</div>")
        btn = W.Button(description="open in Explorer", layout=W.Layout(width=f"{THUMB}px"))
        btn.on_click(lambda b, im=image: self.open_image(im))
        return W.VBox([img, cap, btn])

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

    # -- static ---------------------------------------------------------------------------
    def figure(self, ncols: int = 4):
        panels = [Panel(self._caption(im, self.ranking().loc[im]), self._thumb(im)) for im in self.shown]
        return panels_figure(panels or [Panel("no images", note="nothing to show")], ncols=min(ncols, max(1, len(panels))),
                             size=3.0, suptitle=f"Gallery: top {len(panels)} synthetic images by "
                                                f"{self.sort.value} ({self.method.value} map; overlay = flagged pixels)")

    def static_html(self) -> str:
        v = self.view
        head = banner_html(v.attrs) + header_html(v, "Gallery") + "<br>"
        if self._unavailable():
            return head + note_html(self._unavailable())
        return head + figure_html(self.figure(), "gallery of synthetic images")

    def _repr_mimebundle_(self, **kwargs):
        return static_fallback(super()._repr_mimebundle_(**kwargs), self)
