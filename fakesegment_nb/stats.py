"""Domain statistics of a feature store: the tables behind ``fakesegment stats``.

Three tables (DESIGN.md section 5; the CSV names and columns are a contract):

* ``layers.csv`` -- one row per layer: ``fid``, ``kid`` on the per-image vectors, and
  ``patch_fd``, the Fréchet distance between Gaussians fitted to the per-location feature
  vectors (every ``(y, x)`` of every image), which stays meaningful with few images.
* ``channels.csv`` -- one row per (layer, channel): per-domain mean and std (ddof=1) of the
  per-image channel means, the fraction of positive activations, Cohen's d.
* ``pairs.csv`` -- one row per (paired synthetic image, layer): ``mse``, ``ssim``, ``cosine``.
* ``images.csv`` -- one row per (synthetic image, layer), plus a ``fused`` layer: ``score``
  (higher = less realistic) and ``rank`` (1 = least realistic) from
  :func:`fakesegment_nb.realism.realism_scores`.

``layers.csv`` also carries the gap on one scale (:mod:`fakesegment_nb.gap`): ``fid_lo,
fid_hi`` (bootstrap interval), ``fid_floor`` and ``fid_ratio``, ``c2st_auroc`` and ``c2st_p``;
the ``gap`` table (cached, not a CSV) adds the AUROC interval, its chance level and a ``note``
saying why a value is NaN. All of it comes from the per-image vectors the pass over the store
computes anyway.

Everything is a dask reduction over the chunked store, a layer at a time, in blocks of a few
MiB (:mod:`fakesegment_nb.layerstats`): memory grows with the number of images only through the ``(images, channels)`` table of
per-image vectors. A running ``dask.distributed.Client`` is used when there is one.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from . import __version__
from .errors import FakesegmentError
from .gap import EXTRA_FIELDS, GAP_FIELDS
from .layerstats import layer_stats
from .store import as_strings, as_tree, image_table, layer_names, partners
from .writer import consolidate

__all__ = ["domain_stats", "write_stats", "compute_stats", "cached_stats", "fingerprint", "StatsTables",
           "layer_table", "channel_table", "pair_table", "image_scores", "gap_profile", "compare_stores",
           "LAYER_COLUMNS", "CHANNEL_COLUMNS", "PAIR_COLUMNS", "IMAGE_COLUMNS", "GAP_COLUMNS", "COMPARE_EXTRA",
           "FUSED", "TABLES", "COLUMNS"]

LAYER_COLUMNS = ["layer", "fid", "kid", "patch_fd", "n_real", "n_synthetic", "channels", "height",
                 "width", "n_nonfinite", *GAP_FIELDS]
CHANNEL_COLUMNS = ["layer", "channel", "mean_real", "std_real", "mean_synthetic", "std_synthetic",
                   "active_real", "active_synthetic", "effect_size"]
PAIR_COLUMNS = ["image", "pair", "layer", "mse", "ssim", "cosine"]
IMAGE_COLUMNS = ["image", "layer", "score", "rank"]
GAP_COLUMNS = ["layer", *EXTRA_FIELDS]
COMPARE_EXTRA = ["c2st_lo", "c2st_hi", "c2st_chance"]
FUSED = "fused"  # the layer name of images.csv's rows that fuse every layer's score
TABLES = ("layers", "channels", "pairs", "images", "gap")
COLUMNS = {"layers": LAYER_COLUMNS, "channels": CHANNEL_COLUMNS, "pairs": PAIR_COLUMNS, "images": IMAGE_COLUMNS,
           "gap": GAP_COLUMNS}
_STRING_COLUMNS = ("layer", "image", "pair", "note")


@dataclass
class StatsTables:
    """The tables of a store (``pairs`` is empty when the store has no pairs; ``images`` and
    ``gap`` are empty when not computed)."""

    layers: pd.DataFrame
    channels: pd.DataFrame
    pairs: pd.DataFrame
    images: pd.DataFrame = None
    gap: pd.DataFrame = None

    def __post_init__(self):
        for name in ("images", "gap"):
            if getattr(self, name) is None:
                setattr(self, name, _table([], COLUMNS[name]))

    def __getitem__(self, name: str) -> pd.DataFrame:
        return getattr(self, name)


# --------------------------------------------------------------------------------------------
# whole store


def fingerprint(store) -> str:
    """What the cached statistics depend on: images, domains, contents, pairs, network, version."""
    tree = as_tree(store)
    images = image_table(tree)
    h = hashlib.sha256()
    h.update(json.dumps({k: tree.attrs.get(k) for k in ("model", "weights", "layers", "input_size")},
                        sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    for col in ("domain", "sha256", "pair"):
        h.update("\0".join(images[col].astype(str)).encode())
    h.update("\0".join(images.index.astype(str)).encode())
    return h.hexdigest()


def compute_stats(store, tables=TABLES, layers=None) -> StatsTables:
    """Compute the statistics tables of a store (no cache), a layer at a time.

    Parameters
    ----------
    store : store path / URL or the DataTree of :func:`~fakesegment_nb.open_store`.
    tables : which of ``"layers"``, ``"channels"``, ``"pairs"``, ``"images"``, ``"gap"`` to
        compute; the others come back empty (all but pairs share one pass over the store;
        ``gap`` comes with ``layers``).
    layers : layer names (default: all, in network order).

    Raises
    ------
    FakesegmentError
        The store has no real or no synthetic images (every table compares the two), or an
        unknown layer or table is asked for.
    """
    tree = as_tree(store)
    want = set(tables)
    if want - set(TABLES):
        raise FakesegmentError(f"unknown statistics table(s) {sorted(want - set(TABLES))}; choose from {TABLES}")
    images = image_table(tree)
    domains = images["domain"].to_numpy(dtype=str)
    counts = {d: int((domains == d).sum()) for d in ("real", "synthetic")}
    if want & {"layers", "channels", "images", "gap"} and min(counts.values()) == 0:
        empty = [d for d, n in counts.items() if n == 0]
        raise FakesegmentError(f"the store has no {' and no '.join(empty)} images "
                               f"({counts['real']} real, {counts['synthetic']} synthetic); "
                               "domain statistics compare real with synthetic")
    pairs = partners(images)
    layers = layer_names(tree) if layers is None else list(layers)
    if "gap" in want:
        want.add("layers")
    layer_rows, channel_rows, pair_rows, gap_rows, scores = [], [], [], [], {}
    for layer in layers:
        res = layer_stats(tree, layer, domains, (pairs["i_syn"].to_numpy(), pairs["i_real"].to_numpy()), want)
        if "layer_row" in res:
            layer_rows.append(res["layer_row"])
            channel_rows.append(res["channel_rows"])
        if "gap_row" in res:
            gap_rows.append(res["gap_row"])
        if "scores" in res:
            scores[layer] = res["scores"]
        if "pairs" in res:
            pair_rows.append(pd.DataFrame({"image": pairs["image"].to_numpy(), "pair": pairs["pair"].to_numpy(),
                                           "layer": layer, "mse": res["pairs"][:, 0],
                                           "ssim": res["pairs"][:, 1], "cosine": res["pairs"][:, 2]}))
    def keep(name, rows, columns, records=False):
        # rows of a table not asked for may lack its columns (the layer rows without "gap")
        return _table(rows, columns, records) if name in want else _table([], COLUMNS[name])

    return StatsTables(keep("layers", layer_rows, LAYER_COLUMNS, records=True),
                       keep("channels", channel_rows, CHANNEL_COLUMNS),
                       _sort_pairs(_table(pair_rows, PAIR_COLUMNS), pairs, layers),
                       _image_rows(images.index[domains == "synthetic"], scores),
                       keep("gap", gap_rows, GAP_COLUMNS, records=True))


def _image_rows(synthetic_ids, scores: dict) -> pd.DataFrame:
    """``images.csv``: per layer (network order, then ``fused``), the synthetic images by
    score, least realistic first. ``fused`` = the mean over layers of an image's finite
    per-layer scores (every layer's score is in units of a typical real image's distance, so
    they share a scale); ``rank`` is NaN where the score is."""
    if not scores:
        return _table([], IMAGE_COLUMNS)
    ids = np.asarray(synthetic_ids, dtype=object)
    if len(scores) > 1 or FUSED not in scores:
        stacked = np.vstack(list(scores.values()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an image with no finite score: NaN
            scores = {**scores, FUSED: np.nanmean(stacked, axis=0)}
    parts = []
    for layer, sc in scores.items():
        df = pd.DataFrame({"image": ids, "layer": layer, "score": np.asarray(sc, dtype=float)})
        df["rank"] = df["score"].rank(method="first", ascending=False).astype("Int64")
        parts.append(df.sort_values("rank", na_position="last", kind="stable"))
    return pd.concat(parts, ignore_index=True)[IMAGE_COLUMNS]


def _table(parts, columns, records=False) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c in _STRING_COLUMNS else "Int64" if c == "rank" else float)
                             for c in columns})
    df = pd.DataFrame.from_records(parts) if records else pd.concat(parts, ignore_index=True)
    return df[columns].reset_index(drop=True)


def _sort_pairs(df: pd.DataFrame, pairs: pd.DataFrame, layers: list[str]) -> pd.DataFrame:
    if df.empty:
        return df
    order = {im: i for i, im in enumerate(pairs["image"])}
    lorder = {l: i for i, l in enumerate(layers)}
    key = df["image"].map(order) * len(layers) + df["layer"].map(lorder)
    return df.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# cache in the store's stats/ group


def cached_stats(store) -> StatsTables | None:
    """The tables cached in the store's ``stats/`` group, or None if absent or out of date."""
    tree = as_tree(store)
    if "stats" not in tree.children or "layers" not in tree["stats"].children:
        return None
    fp = fingerprint(tree)
    out = {}
    for name, columns in COLUMNS.items():
        node = tree["stats"].children.get(name)
        if node is None:
            if name == "pairs" and tree["stats/layers"].attrs.get("has_pairs") is False:
                out[name] = _table([], columns)
                continue
            return None  # absent, or written before this table existed
        if node.attrs.get("fingerprint") != fp:
            return None
        df = node.to_dataset(inherit=False).load().to_dataframe().reset_index(drop=True)
        if not set(columns) <= set(df.columns):
            return None  # written by a version with fewer columns
        for col in _STRING_COLUMNS:
            if col in df:
                df[col] = as_strings(df[col].to_numpy())
        if "rank" in df:
            df["rank"] = df["rank"].round().astype("Int64")
        out[name] = df[columns]
    return StatsTables(**out)


def _write_cache(url: str, tables: StatsTables, fp: str) -> None:
    import zarr

    for name in TABLES:
        df = tables[name]
        if df.empty:
            continue
        ds = xr.Dataset({c: ("row", df[c].to_numpy(dtype=object) if df[c].dtype == object
                              else df[c].to_numpy(dtype=float, na_value=np.nan) if c == "rank"
                              else df[c].to_numpy())
                         for c in df.columns},
                        attrs={"fingerprint": fp, "has_pairs": not tables.pairs.empty})
        ds.to_zarr(url, group=f"stats/{name}", mode="w", consolidated=False, zarr_format=3)
    if tables.pairs.empty:
        g = zarr.open_group(url, mode="a", zarr_format=3, use_consolidated=False)
        if "stats" in g and "pairs" in g["stats"]:
            del g["stats"]["pairs"]
    consolidate(url)  # plain xr.open_datatree users see the new tables at once


def domain_stats(store, cache: bool = True) -> StatsTables:
    """All three tables: from the store's ``stats/`` cache when it is up to date, else computed.

    Parameters
    ----------
    store : store path / URL or an opened DataTree.
    cache : read the cache if fresh (nothing is written; :func:`write_stats` does that).
    """
    tree = as_tree(store)
    if cache:
        hit = cached_stats(tree)
        if hit is not None:
            return hit
    return compute_stats(tree)


def layer_table(store, cache: bool = True) -> pd.DataFrame:
    """``layers.csv`` as a DataFrame: one row per layer, ``fid, kid, patch_fd, n_real, ...,
    fid_lo, fid_hi, fid_floor, fid_ratio, c2st_auroc, c2st_p``."""
    tree = as_tree(store)
    hit = cached_stats(tree) if cache else None
    return hit.layers if hit is not None else compute_stats(tree, ("layers",)).layers


def _layer_rows(store, name: str, layer: str | None, cache: bool) -> pd.DataFrame:
    """Table ``name`` from the cache (or computed for ``layer`` only), cut to ``layer``'s rows."""
    tree = as_tree(store)
    hit = cached_stats(tree) if cache else None
    if hit is not None:
        df = hit[name]
    else:
        df = compute_stats(tree, (name,), layers=None if layer is None else [layer])[name]
    return df if layer is None else df[df["layer"] == layer].reset_index(drop=True)


def gap_profile(store, cache: bool = True) -> pd.DataFrame:
    """The gap profile: one row per layer, in network order, with the ``layers.csv`` columns and
    the ``gap`` table's (``c2st_lo, c2st_hi, c2st_chance, folds, permutations, note``)."""
    tree = as_tree(store)
    hit = cached_stats(tree) if cache else None
    t = hit if hit is not None else compute_stats(tree, ("layers", "gap"))
    return t.layers.merge(t.gap, on="layer", how="left")


def image_scores(store, layer: str | None = None, cache: bool = True) -> pd.DataFrame:
    """``images.csv`` as a DataFrame: ``image, layer, score, rank`` per synthetic image and layer
    (and ``fused``), least realistic first within each layer; ``layer`` picks one layer's rows."""
    tree = as_tree(store)
    hit = cached_stats(tree) if cache else None
    df = hit.images if hit is not None else compute_stats(tree, ("images",)).images
    return df if layer is None else df[df["layer"] == layer].reset_index(drop=True)


def channel_table(store, layer: str | None = None, cache: bool = True) -> pd.DataFrame:
    """``channels.csv`` as a DataFrame (optionally one layer's rows), one row per channel."""
    return _layer_rows(store, "channels", layer, cache)


def pair_table(store, layer: str | None = None, cache: bool = True) -> pd.DataFrame:
    """``pairs.csv`` as a DataFrame: ``image, pair, layer, mse, ssim, cosine`` (empty if no pairs)."""
    return _layer_rows(store, "pairs", layer, cache)


def write_stats(store, out_dir=None, recompute: bool = False) -> StatsTables:
    """Compute (or reuse) the statistics, cache them in the store and write the CSV files.

    Parameters
    ----------
    store : store path or URL (it is written to: ``stats/layers``, ``stats/channels``,
        ``stats/pairs``, ``stats/images``, ``stats/gap``; the root group and its attributes are
        left alone).
    out_dir : folder for ``layers.csv``, ``channels.csv``, ``images.csv`` and, when the store
        has pairs, ``pairs.csv`` (a stale ``pairs.csv`` there is removed). None: cache only.
    recompute : ignore an up-to-date cache.

    Returns
    -------
    StatsTables
    """
    if not isinstance(store, (str, Path)):
        raise FakesegmentError("write_stats needs the store's path or URL (it writes the stats/ group)")
    url = str(store)
    tree = as_tree(url)
    tables = None if recompute else cached_stats(tree)
    if tables is None:
        tables = compute_stats(tree)
        _write_cache(url, tables, fingerprint(tree))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tables.layers.to_csv(out / "layers.csv", index=False)
        tables.channels.to_csv(out / "channels.csv", index=False)
        tables.images.to_csv(out / "images.csv", index=False)
        if tables.pairs.empty:
            (out / "pairs.csv").unlink(missing_ok=True)
        else:
            tables.pairs.to_csv(out / "pairs.csv", index=False)
    return tables


# --------------------------------------------------------------------------------------------
# several stores


def _label(tree) -> str:
    return f"{tree.attrs.get('model', '?')} ({tree.attrs.get('weights', '?')})"


def compare_stores(stores, labels=None, cache: bool = True) -> pd.DataFrame:
    """Layer tables of several stores side by side (different models or weights, same images).

    Parameters
    ----------
    stores : store paths / URLs or opened DataTrees.
    labels : one name per store (default ``"model (weights)"``, numbered if repeated).
    cache : use each store's up-to-date ``stats/`` cache when it has one.

    Returns
    -------
    DataFrame indexed by layer depth (0 = first layer), columns ``(label, field)`` with fields
    ``layer, relative_depth, fid, kid, patch_fd, n_real, n_synthetic`` and the gap profile's
    ``fid_lo, fid_hi, fid_floor, fid_ratio, c2st_auroc, c2st_p, c2st_lo, c2st_hi, c2st_chance``.
    ``relative_depth`` is the layer's place in its network, 0 (first stored layer) to 1 (last),
    so that networks with different numbers of layers share one axis. Warns when the stores do
    not hold the same images (by content) -- their distances are then not comparable;
    ``c2st_auroc`` and ``fid_ratio`` are on one scale across models all the same. Whether the
    networks agree: :func:`fakesegment_nb.agreement.network_agreement`.
    """
    trees = [as_tree(s) for s in stores]
    if not trees:
        raise FakesegmentError("compare_stores needs at least one store")
    if labels is None:
        base = [_label(t) for t in trees]
        labels = [f"{l} #{base[:i + 1].count(l)}" if base.count(l) > 1 else l for i, l in enumerate(base)]
    labels = list(labels)
    if len(labels) != len(trees) or len(set(labels)) != len(labels):
        raise FakesegmentError("compare_stores needs one distinct label per store")
    contents = [tuple(sorted(zip(*(image_table(t)[c] for c in ("domain", "sha256"))))) for t in trees]
    if len(set(contents)) > 1:
        warnings.warn("the stores do not hold the same images; their distances are not comparable",
                      UserWarning, stacklevel=2)
    fields = ["layer", "relative_depth", "fid", "kid", "patch_fd", "n_real", "n_synthetic", *GAP_FIELDS,
              *COMPARE_EXTRA]
    parts = {}
    for lab, t in zip(labels, trees):
        df = gap_profile(t, cache=cache)
        df["relative_depth"] = np.arange(len(df)) / max(1, len(df) - 1)
        parts[lab] = df[fields].rename_axis("depth")
    return pd.concat(parts, axis=1, names=["store", "field"])
