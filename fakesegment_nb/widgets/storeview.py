"""Read side shared by the widgets and the report: one open store, lazy reads, small LRU caches.

Nothing here computes statistics or maps; it reads what the store holds (DESIGN.md section 3)
and asks :mod:`fakesegment_nb.stats` for its tables (cached in the store).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import FakesegmentError, ImageError
from ..images import load_rgb
from ..resample import display_shape, resize_map
from ..store import image_table, layer_names, open_store, set_names
from .markup import banner_html, header_html, note_html

__all__ = ["StoreView", "LRU", "METHOD_ORDER", "layer_list", "store_header"]

# the order maps are shown in: where an image looks rendered, then its unusual details, then
# what differs from its real twin; methods unknown here follow, by name
METHOD_ORDER = ("domain", "reference", "paired")


class LRU(OrderedDict):
    """A tiny least-recently-used cache: ``get_or(key, make)``."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, make: Callable):
        if key in self:
            self.move_to_end(key)
            return self[key]
        val = make()
        self[key] = val
        if len(self) > self.size:
            self.popitem(last=False)
        return val


class StoreView:
    """The parts of a feature store the widgets show, read lazily and cached.

    Parameters
    ----------
    store : path/URL of a store, or a DataTree from :func:`fakesegment_nb.open_store`.
    layers : the layers to show (default: all, in network order).
    """

    def __init__(self, store, layers=None):
        if isinstance(store, StoreView):
            self.__dict__.update(store.__dict__)
            return
        if isinstance(store, xr.DataTree):
            self.url = "<DataTree>"
            self.tree = self.source = store
        else:
            self.url = self.source = str(store)
            # lazily indexed numpy (no dask): the fastest way to read single maps
            self.tree = open_store(store, chunks=None)
        self.attrs = dict(self.tree.attrs)
        self.table = image_table(self.tree)
        self.layers = layer_names(self.tree)
        if layers is not None:
            unknown = [l for l in layers if l not in self.layers]
            if unknown or not layers:
                raise FakesegmentError(f"the store has no layer {', '.join(unknown) or '(none given)'}; "
                                       f"it has {', '.join(self.layers)}")
            self.layers = [l for l in self.layers if l in layers]
        size = self.attrs.get("input_size") or [300, 300]
        self.input_size = (int(size[0]), int(size[1]))
        self.domains = [d for d in ("real", "synthetic") if (self.table["domain"] == d).any()]
        self.sets = set_names(self.table)  # the synthetic sets, in store order
        self._rgb = LRU(48)
        self._picture = LRU(48)
        self._fmap = LRU(512)
        self._maps = LRU(64)
        self._vectors = LRU(8)
        self._summaries: dict = {}
        self._image_summaries: dict = {}
        self._stats = None

    # -- store facts ------------------------------------------------------------------------
    @property
    def two_domains(self) -> bool:
        return len(self.domains) == 2

    @property
    def trained(self) -> bool:
        return bool(self.attrs.get("weights_trained", False))

    def images(self, domain: str | None = None) -> list[str]:
        t = self.table
        return list(t.index if domain in (None, "all") else t.index[t["domain"] == domain])

    def set_of(self, image: str) -> str:
        """The synthetic set ``image`` belongs to ("" for a real image)."""
        return str(self.table.at[image, "set"])

    def set_images(self, set_name: str | None = None) -> list[str]:
        """The synthetic images of ``set_name`` in store order (None or "all": every set's)."""
        if set_name in (None, "all"):
            return self.images("synthetic")
        t = self.table
        return list(t.index[(t["domain"] == "synthetic") & (t["set"] == set_name)])

    def domain(self, image: str) -> str:
        return str(self.table.at[image, "domain"])

    def partner(self, image: str) -> str | None:
        p = str(self.table.at[image, "pair"])
        return p if p and p in self.table.index else None

    def partner_count(self) -> int:
        """Number of images whose pair is stored."""
        return int(self.table["pair"].isin(self.table.index).sum())

    def channels(self, layer: str) -> int:
        return int(self.tree["layers"][layer]["features"].sizes["channel"])

    def layer_table(self) -> pd.DataFrame:
        """One row per shown layer: channels, feature-grid height and width, stored MiB."""
        rows = []
        for layer in self.layers:
            da = self.tree["layers"][layer]["features"]
            rows.append({"layer": layer, "channels": da.sizes["channel"], "height": da.sizes["y"],
                         "width": da.sizes["x"], "MiB (float16)": round(da.size * 2 / 2**20, 2)})
        return pd.DataFrame(rows)

    def layer_shape(self, layer: str) -> tuple[int, int]:
        s = self.tree["layers"][layer]["features"].sizes
        return int(s["y"]), int(s["x"])

    def missing_domain(self) -> str:
        have = self.domains[0] if self.domains else "no"
        need = "synthetic" if have == "real" else "real"
        return f"this store holds only {have} images; add {need} images with `fakesegment extract`"

    # -- pixels -----------------------------------------------------------------------------
    def original_size(self, image: str) -> tuple[int, int]:
        """The image's own ``(height, width)`` (the root's ``height``, ``width``); the input size
        for a store that does not record it."""
        try:
            h, w = int(self.table.at[image, "height"]), int(self.table.at[image, "width"])
        except (KeyError, TypeError, ValueError):
            return self.input_size
        return (h, w) if h > 1 and w > 1 else self.input_size

    def display_shape(self, image: str) -> tuple[int, int]:
        """The ``(height, width)`` the widgets draw ``image`` at: its own aspect ratio, the longer
        side as long as the network input's longer side (the maps' own resolution)."""
        return display_shape(self.original_size(image), max(self.input_size))

    def picture(self, image: str) -> np.ndarray | None:
        """The source image at :meth:`display_shape` (its own aspect ratio), or None when the file
        cannot be read."""

        def make():
            try:
                arr = load_rgb(self.table.at[image, "path"])
            except ImageError:
                return None
            from PIL import Image

            h, w = self.display_shape(image)
            return np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))

        return self._picture.get_or(image, make)

    def rgb(self, image: str) -> np.ndarray | None:
        """The source image resized to the network input size (how the network saw it)."""

        def make():
            try:
                arr = load_rgb(self.table.at[image, "path"])
            except ImageError:
                return None
            from PIL import Image

            h, w = self.input_size
            return np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))

        return self._rgb.get_or(image, make)

    def fmap(self, image: str, layer: str, channel: int) -> np.ndarray:
        """One feature map as float32 ``(y, x)``."""

        def make():
            da = self.tree["layers"][layer]["features"]
            i = self.table.index.get_loc(image)
            return np.asarray(da.isel(image=i, channel=int(channel)).values, dtype=np.float32)

        return self._fmap.get_or((image, layer, int(channel)), make)

    def layer_vectors(self, layer: str) -> np.ndarray:
        """Per-image channel means of ``layer`` as float64 ``(image, channel)`` (read once)."""

        def make():
            da = self.tree["layers"][layer]["features"]
            out = np.empty((da.sizes["image"], da.sizes["channel"]))
            for i in range(da.sizes["image"]):  # one image at a time: bounded memory
                out[i] = np.asarray(da.isel(image=i).values, dtype=np.float64).mean(axis=(1, 2))
            return out

        return self._vectors.get_or(layer, make)

    # -- maps -------------------------------------------------------------------------------
    def methods(self) -> list[str]:
        """The map methods the store holds, in :data:`METHOD_ORDER` (others after, by name)."""
        if "maps" not in self.tree.children:
            return []
        have = [m for m, node in self.tree["maps"].children.items() if "score" in node.ds]
        rank = {m: i for i, m in enumerate(METHOD_ORDER)}
        return sorted(have, key=lambda m: (rank.get(m, len(rank)), m))

    def score(self, method: str, image: str) -> np.ndarray:
        def make():
            da = self.tree["maps"][method]["score"]
            return np.asarray(da.isel(image=self.table.index.get_loc(image)).values, dtype=np.float32)

        return self._maps.get_or((method, "score", image), make)

    def mask(self, method: str, image: str) -> np.ndarray | None:
        node = self.tree["maps"][method]
        if "mask" not in node.ds:
            return None

        def make():
            return np.asarray(node["mask"].isel(image=self.table.index.get_loc(image)).values, dtype=bool)

        return self._maps.get_or((method, "mask", image), make)

    def display_score(self, method: str, image: str) -> np.ndarray:
        """The image's ``method`` score resized onto the image at :meth:`display_shape`
        (:func:`fakesegment_nb.resample.resize_map`)."""
        return self._maps.get_or((method, "display", image),
                                 lambda: resize_map(self.score(method, image), self.display_shape(image)))

    def display_mask(self, method: str, image: str, threshold: float | None = None) -> np.ndarray | None:
        """The mask at :meth:`display_shape`: the resized score above ``threshold`` (default the
        calibrated one); the stored mask resized (nearest) when the store has no threshold."""
        thr = self.threshold(method, image) if threshold is None else threshold
        if thr is not None:
            return np.nan_to_num(self.display_score(method, image), nan=-np.inf) > thr
        m = self.mask(method, image)
        return None if m is None else resize_map(m, self.display_shape(image))

    def threshold(self, method: str, image: str | None = None) -> float | None:
        """The calibrated mask threshold the maps step recorded: per image (a ``threshold``
        variable, NaN where the method does not score the image) or one for the method (an
        attribute). None when there is none."""
        node = self.tree["maps"][method]
        if "threshold" in node.ds.data_vars:
            if image is None:
                return None
            every = self._maps.get_or((method, "threshold"),  # (image,): read once
                                      lambda: np.asarray(node["threshold"].values, np.float64))
            t = float(every[self.table.index.get_loc(image)])
            return t if np.isfinite(t) else None
        t = node.attrs.get("threshold")
        try:
            return float(t) if t is not None and np.isfinite(float(t)) else None
        except (TypeError, ValueError):
            return None

    def per_image_threshold(self, method: str) -> bool:
        return "threshold" in self.tree["maps"][method].ds.data_vars

    def image_summary(self, method: str, image: str) -> dict | None:
        """``area`` (the mask's share of the image; NaN without a mask or threshold), ``max`` and
        ``mean`` score of one image's ``method`` map; None where the map does not score it."""

        def make():
            s = self.score(method, image)
            if not np.isfinite(s).any():
                return None
            m = self.mask(method, image)
            thr = self.threshold(method, image)
            if m is None and thr is not None:
                m = np.nan_to_num(s, nan=-np.inf) > thr
            return {"area": float(m.mean()) if m is not None else np.nan, "max": float(np.nanmax(s)),
                    "mean": float(np.nanmean(s))}

        key = (method, image)
        if key not in self._image_summaries:  # three numbers an image: kept, not evicted
            self._image_summaries[key] = make()
        return self._image_summaries[key]

    def map_summary(self, method: str) -> pd.DataFrame:
        """Per synthetic image the map scores: ``area`` (mask fraction), ``max`` and ``mean`` score."""

        def make():
            rows = [{"image": im, **row} for im in self.images("synthetic")
                    if (row := self.image_summary(method, im)) is not None]
            return pd.DataFrame(rows, columns=["image", "area", "max", "mean"]).set_index("image")

        if method not in self._summaries:
            self._summaries[method] = make()
        return self._summaries[method]

    # -- statistics (fakesegment_nb.stats) -------------------------------------------------
    def stats_missing(self) -> str | None:
        """Why domain statistics cannot be computed for this view, or None when they can (reads nothing)."""
        return None if self.two_domains else self.missing_domain()

    def stats(self):
        """``(StatsTables, None)`` for the shown layers (plus the fused realism scores), computed
        once through the store's up-to-date statistics cache, or ``(None, reason)``."""
        if self._stats is None:
            self._stats = self._read_stats()
        return self._stats

    def _read_stats(self):
        from ..stats import FUSED, domain_stats

        why = self.stats_missing()
        if why is not None:
            return None, why
        try:
            tables = domain_stats(self.source, cache=True)
        except FakesegmentError as exc:
            return None, str(exc)
        keep = lambda df: df[df["layer"].isin(self.layers)].reset_index(drop=True)  # noqa: E731
        images = tables.images[tables.images["layer"].isin([*self.layers, FUSED])].reset_index(drop=True)
        return type(tables)(layers=keep(tables.layers), channels=keep(tables.channels), pairs=keep(tables.pairs),
                            images=images, gap=keep(tables.gap)), None

    def stats_table(self, kind: str) -> pd.DataFrame | None:
        """The ``layers``, ``channels`` or ``pairs`` table, or None (see :meth:`stats` for why)."""
        tables, _ = self.stats()
        return None if tables is None else tables[kind]


def layer_list(layers):
    """A ``layers`` parameter (None, a list, or a comma-separated string, as notebooks receive it)
    as a list, or None for all layers."""
    if layers is None or layers == "":
        return None
    if isinstance(layers, str):
        return [l.strip() for l in layers.split(",") if l.strip()]
    return [str(l) for l in layers]


def store_header(store, title: str = "Feature store"):
    """Banner + one-line header of a store for a notebook cell; says so if it cannot be opened."""
    from IPython.display import HTML

    try:
        view = store if isinstance(store, StoreView) else StoreView(store)
    except FakesegmentError as exc:
        return HTML(note_html(f"cannot open the store: {exc}", kind="error"))
    return HTML(banner_html(view.attrs) + header_html(view, title))
