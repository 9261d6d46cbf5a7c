"""Domain statistics of a feature store: the tables behind ``fakesegment stats``.

Four tables (DESIGN.md section 5; the CSV names and columns are a contract, their schema is in
:mod:`fakesegment_nb.stattables`), each with a ``set`` column:

* ``layers.csv`` -- one row per (set, layer): ``fid``, ``kid`` on the per-image vectors, and
  ``patch_fd``, the Fréchet distance between Gaussians fitted to the per-location feature
  vectors (every ``(y, x)`` of every image), which stays meaningful with few images.
* ``channels.csv`` -- one row per (set, layer, channel): per-domain mean and std (ddof=1) of the
  per-image channel means, the fraction of positive activations, Cohen's d.
* ``pairs.csv`` -- one row per (paired synthetic image, layer): ``mse``, ``ssim``, ``cosine``.
* ``images.csv`` -- one row per (synthetic image, layer), plus a ``fused`` layer: ``score``
  (higher = less realistic) and ``rank`` (1 = least realistic within its set and layer) from
  :func:`fakesegment_nb.realism.realism_scores`.

Every synthetic set of the store (:func:`fakesegment_nb.store.set_names`) is compared with all
of its real images, and its rows equal those of a store that holds that set alone: the real
images are read once, the same seeded functions run on the same vectors per set.

``layers.csv`` also carries the gap on one scale (:mod:`fakesegment_nb.gap`): ``fid_lo,
fid_hi`` (bootstrap interval), ``fid_floor`` and ``fid_ratio``, ``c2st_auroc`` and ``c2st_p``;
the ``gap`` table (cached, not a CSV) adds the AUROC interval, its chance level and a ``note``
saying why a value is NaN. All of it comes from the per-image vectors the pass over the store
computes anyway.

Everything is a dask reduction over the chunked store, a layer at a time, in blocks of a few
MiB (:mod:`fakesegment_nb.layerstats`): memory grows with the number of images only through the
``(images, channels)`` table of per-image vectors. A running ``dask.distributed.Client`` is
used when there is one. The tables are cached per set in the store's ``stats/`` group
(:mod:`fakesegment_nb.statcache`): a set added to a store costs only its own statistics.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .errors import FakesegmentError, ParameterError
from .gap import GAP_FIELDS
from .layerstats import layer_stats
from .statcache import cached_sets, fingerprints, merge_tables, write_cache
from .stattables import (CHANNEL_COLUMNS, COLUMNS, FUSED, GAP_COLUMNS, IMAGE_COLUMNS, LAYER_COLUMNS, PAIR_COLUMNS,
                         TABLES, StatsTables, by_set, image_rows, select_set, table)
from .store import as_tree, image_table, layer_names, partners, set_names

__all__ = ["domain_stats", "write_stats", "compute_stats", "cached_stats", "fingerprints", "StatsTables",
           "layer_table", "channel_table", "pair_table", "image_scores", "gap_profile", "compare_stores",
           "store_name", "store_names", "numbered", "line_labels", "comparability",
           "LAYER_COLUMNS", "CHANNEL_COLUMNS", "PAIR_COLUMNS", "IMAGE_COLUMNS", "GAP_COLUMNS", "COMPARE_EXTRA",
           "FUSED", "TABLES", "COLUMNS"]

COMPARE_EXTRA = ["c2st_lo", "c2st_hi", "c2st_chance"]


# --------------------------------------------------------------------------------------------
# whole store


def _check_sets(images: pd.DataFrame, sets) -> list[str]:
    """``sets`` (default: every set of the store) in store order, each checked to be a set."""
    known = set_names(images)
    if sets is None:
        return known
    asked = [sets] if isinstance(sets, str) else list(sets)
    unknown = [s for s in asked if s not in known]
    if unknown:
        raise ParameterError("set_name", f"{unknown[0]!r} is not a synthetic set of the store; it has "
                                         + (", ".join(map(repr, known)) or "none"))
    return [s for s in known if s in asked]


def compute_stats(store, tables=TABLES, layers=None, sets=None) -> StatsTables:
    """Compute the statistics tables of a store (no cache), a layer at a time.

    Parameters
    ----------
    store : store path / URL or the DataTree of :func:`~fakesegment_nb.open_store`.
    tables : which of ``"layers"``, ``"channels"``, ``"pairs"``, ``"images"``, ``"gap"`` to
        compute; the others come back empty (all but pairs share one pass over the store;
        ``gap`` comes with ``layers``).
    layers : layer names (default: all, in network order).
    sets : synthetic set names (default: all, :func:`~fakesegment_nb.store.set_names`); each is
        compared with all the real images, as if the store held that set alone.

    Raises
    ------
    FakesegmentError
        The store has no real or no synthetic images (every table compares the two), or an
        unknown layer, set (``ParameterError`` naming ``set_name``) or table is asked for.
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
    names = _check_sets(images, sets)
    if not names:
        return StatsTables(*(table([], COLUMNS[n]) for n in TABLES))
    pairs = partners(images)
    pairs = pairs[pairs["set"].isin(names)].reset_index(drop=True)
    in_set = images["set"].to_numpy(dtype=object)
    members = {name: np.flatnonzero((domains == "synthetic") & (in_set == name)) for name in names}
    layers = layer_names(tree) if layers is None else list(layers)
    if "gap" in want:
        want.add("layers")
    rows = {name: {"layers": [], "channels": [], "gap": [], "scores": {}} for name in names}
    pair_rows = []
    for layer in layers:
        res = layer_stats(tree, layer, np.flatnonzero(domains == "real"), members,
                          (pairs["i_syn"].to_numpy(), pairs["i_real"].to_numpy()), want)
        for name, part in res["sets"].items():
            mine = rows[name]
            mine["layers"].append({"set": name, **part["layer_row"]})
            mine["channels"].append(part["channel_rows"].assign(set=name))
            if "gap_row" in part:
                mine["gap"].append({"set": name, **part["gap_row"]})
            if "scores" in part:
                mine["scores"][layer] = part["scores"]
        if "pairs" in res:
            pair_rows.append(pd.DataFrame({"image": pairs["image"].to_numpy(), "pair": pairs["pair"].to_numpy(),
                                           "layer": layer, "mse": res["pairs"][:, 0], "ssim": res["pairs"][:, 1],
                                           "cosine": res["pairs"][:, 2], "set": pairs["set"].to_numpy()}))

    def keep(name, records=False):
        # rows of a table not asked for may lack its columns (the layer rows without "gap")
        if name not in want:
            return table([], COLUMNS[name])
        return table([r for n in names for r in rows[n][name]], COLUMNS[name], records)

    return StatsTables(keep("layers", records=True), keep("channels"),
                       _sort_pairs(table(pair_rows, PAIR_COLUMNS), pairs, layers, names),
                       table([image_rows(images.index[members[n]], rows[n]["scores"], n) for n in names],
                             IMAGE_COLUMNS),
                       keep("gap", records=True))


def _sort_pairs(df: pd.DataFrame, pairs: pd.DataFrame, layers: list[str], names: list[str]) -> pd.DataFrame:
    """Pair rows set by set, then in store order of the synthetic image, then by layer."""
    if df.empty:
        return df
    order = {im: i for i, im in enumerate(pairs["image"])}
    lorder = {l: i for i, l in enumerate(layers)}
    key = df["image"].map(order) * len(layers) + df["layer"].map(lorder)
    return by_set([df.iloc[np.argsort(key.to_numpy(), kind="stable")]], names, PAIR_COLUMNS)


# --------------------------------------------------------------------------------------------
# the cache in the store's stats/ group, and the readers


def cached_stats(store) -> StatsTables | None:
    """The tables cached in the store's ``stats/`` group, or None if absent or out of date for
    any set."""
    tree = as_tree(store)
    hit, fresh = cached_sets(tree)
    return hit if fresh and fresh == set_names(tree) else None


def _tables(store, cache: bool, tables=TABLES, layers=None, set_name: str | None = None) -> StatsTables:
    """The tables of ``set_name`` (None: every set): the cache's rows of the sets it holds up to
    date (when ``cache``), the others computed (``tables`` and ``layers`` only; nothing is
    written)."""
    tree = as_tree(store)
    images = image_table(tree)
    wanted = _check_sets(images, None if set_name is None else [set_name])
    if not wanted:  # no synthetic images: compute_stats says why there is nothing to compare
        return compute_stats(tree, tables, layers=layers)
    hit, fresh = cached_sets(tree) if cache else (None, [])
    stale = [s for s in wanted if s not in fresh]
    if not stale:
        return merge_tables([hit], wanted)
    new = compute_stats(tree, tables, layers=layers, sets=stale)
    return new if hit is None else merge_tables([hit, new], wanted)


def domain_stats(store, cache: bool = True) -> StatsTables:
    """All the tables, every set's rows: from the store's ``stats/`` cache for the sets it holds
    up to date, the others computed.

    Parameters
    ----------
    store : store path / URL or an opened DataTree.
    cache : read the cache (nothing is written; :func:`write_stats` does that).
    """
    return _tables(store, cache)


def layer_table(store, cache: bool = True, set_name: str | None = None) -> pd.DataFrame:
    """``layers.csv`` as a DataFrame: one row per (set, layer), ``set, layer, fid, kid,
    patch_fd, n_real, ..., fid_lo, fid_hi, fid_floor, fid_ratio, c2st_auroc, c2st_p``;
    ``set_name`` picks one set's rows."""
    return _tables(store, cache, ("layers",), set_name=set_name).layers


def _layer_rows(store, name: str, layer: str | None, cache: bool, set_name: str | None) -> pd.DataFrame:
    """Table ``name`` from the cache (or computed for ``layer`` only), cut to ``layer``'s rows."""
    df = _tables(store, cache, (name,), layers=None if layer is None else [layer], set_name=set_name)[name]
    return df if layer is None else df[df["layer"] == layer].reset_index(drop=True)


def gap_profile(store, cache: bool = True, set_name: str | None = None) -> pd.DataFrame:
    """The gap profile: one row per (set, layer), set by set in store order, layers in network
    order, with the ``layers.csv`` columns and the ``gap`` table's (``c2st_lo, c2st_hi,
    c2st_chance, folds, permutations, note``); ``set_name`` picks one set's rows.

    One line per set: ``for name, rows in gap_profile(store).groupby("set", sort=False)``.
    """
    t = _tables(store, cache, ("layers", "gap"), set_name=set_name)
    return t.layers.merge(t.gap, on=["set", "layer"], how="left")


def image_scores(store, layer: str | None = None, cache: bool = True, set_name: str | None = None) -> pd.DataFrame:
    """``images.csv`` as a DataFrame: ``image, layer, score, rank, set`` per synthetic image and
    layer (and ``fused``), least realistic first within each set and layer; ``layer`` and
    ``set_name`` pick rows."""
    df = _tables(store, cache, ("images",), set_name=set_name).images
    return df if layer is None else df[df["layer"] == layer].reset_index(drop=True)


def channel_table(store, layer: str | None = None, cache: bool = True, set_name: str | None = None) -> pd.DataFrame:
    """``channels.csv`` as a DataFrame (optionally one layer's and one set's rows), one row per
    (set, layer, channel)."""
    return _layer_rows(store, "channels", layer, cache, set_name)


def pair_table(store, layer: str | None = None, cache: bool = True, set_name: str | None = None) -> pd.DataFrame:
    """``pairs.csv`` as a DataFrame: ``image, pair, layer, mse, ssim, cosine, set`` (empty if no
    pairs); ``layer`` and ``set_name`` pick rows."""
    return _layer_rows(store, "pairs", layer, cache, set_name)


def write_stats(store, out_dir=None, recompute: bool = False) -> StatsTables:
    """Compute (or reuse) the statistics, cache them in the store and write the CSV files.

    Only the sets whose cached rows are out of date (or missing) are computed: adding a set to a
    store costs that set's statistics, adding real images every set's.

    Parameters
    ----------
    store : store path or URL (it is written to: ``stats/layers``, ``stats/channels``,
        ``stats/pairs``, ``stats/images``, ``stats/gap``; the root group and its attributes are
        left alone).
    out_dir : folder for ``layers.csv``, ``channels.csv``, ``images.csv`` and, when the store
        has pairs, ``pairs.csv`` (a stale ``pairs.csv`` there is removed). None: cache only.
    recompute : ignore the cache: compute every set again.

    Returns
    -------
    StatsTables, every set's rows.
    """
    if not isinstance(store, (str, Path)):
        raise FakesegmentError("write_stats needs the store's path or URL (it writes the stats/ group)")
    url = str(store)
    tree = as_tree(url)
    names = set_names(tree)
    hit, fresh = (None, []) if recompute else cached_sets(tree)
    if names and fresh == names:
        tables = hit
    else:
        new = compute_stats(tree, sets=[s for s in names if s not in fresh] if names else None)
        tables = new if hit is None else merge_tables([hit, new], names)
        write_cache(url, tables, fingerprints(tree))
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


def store_name(store) -> str:
    """A store's name: the stem of its path or URL (``runs/a/store_lite2.zarr`` -> ``store_lite2``);
    an opened DataTree, which has no path, is named by its model."""
    if isinstance(store, (str, os.PathLike)):
        text = str(store).replace("\\", "/").rstrip("/")
        return PurePosixPath(text).stem or text
    return str(getattr(store, "attrs", {}).get("model", "store"))


def store_names(stores) -> list[str]:
    """One distinct name per store: :func:`store_name`, with the parent folder prefixed where
    stems repeat (``a/store``, ``b/store``), numbered (``store #2``) where even that repeats."""
    stems = [store_name(s) for s in stores]
    names = list(stems)
    for i, s in enumerate(stores):
        if stems.count(stems[i]) > 1 and isinstance(s, (str, os.PathLike)):
            parent = PurePosixPath(str(s).replace("\\", "/").rstrip("/")).parent.name
            names[i] = f"{parent}/{names[i]}" if parent else names[i]
    return numbered(names)


def numbered(labels: list[str]) -> list[str]:
    """``labels`` with ``#1``, ``#2`` ... appended where a label repeats (``a``, ``a`` -> ``a #1``, ``a #2``)."""
    return [f"{n} #{labels[:i + 1].count(n)}" if labels.count(n) > 1 else n for i, n in enumerate(labels)]


def line_labels(names: list[str], sets: list[list[str]]) -> list[str]:
    """One label per (store, set), stores in order, each store's sets in store order: the set's name
    when there is one store of several sets, the store's name for a store of one set, else
    ``"store · set"``."""
    if len(names) == 1 and len(sets[0]) > 1:
        return list(sets[0])
    return [n if len(ss) == 1 else f"{n} · {s}" for n, ss in zip(names, sets) for s in ss]


def comparability(stores, names: list[str] | None = None) -> tuple[str, bool]:
    """What the stores share, in one sentence, and whether their distances compare like for like:
    they do when every store holds the same real images (by content, sha256) -- each set is then
    measured against the same reference. One store: its sets share its real images."""
    trees = [as_tree(s) for s in stores]
    names = store_names(stores) if names is None else list(names)
    tables = [image_table(t) for t in trees]
    real = [set(t.loc[t["domain"] == "real", "sha256"]) for t in tables]
    syn = [set(t.loc[t["domain"] == "synthetic", "sha256"]) for t in tables]
    if len(trees) == 1:
        sets = set_names(tables[0])
        if len(sets) > 1:
            return (f"Every set of {names[0]} ({', '.join(sets)}) is compared with the same {len(real[0])} real "
                    "images: the store holds them once.", True)
        return f"{names[0]}: {len(real[0])} real images.", True
    common = set.intersection(*real)
    if all(r == real[0] for r in real):
        both = set.intersection(*syn)
        if all(s == syn[0] for s in syn):
            tail = f" and the same {len(both)} synthetic images: their figures compare like for like."
        elif both:
            tail = (f" and {len(both)} of their synthetic images: each set is measured against the same real "
                    "images.")
        else:
            tail = ", but no synthetic image: each set is measured against the same real images."
        return f"The stores share the same {len(common)} real images (by sha256){tail}", True
    counts = ", ".join(f"{n} {len(r)}" for n, r in zip(names, real))
    scale = "; c2st_auroc and fid_ratio are on one scale all the same."
    if len(trees) > 2:  # against the first store, one by one
        parts = [f"{n} holds the same {len(r)}" if r == real[0] else
                 f"{n} none of them (it holds {len(r)} others)" if not r & real[0] else
                 f"{n} {len(r & real[0])} of them (of its {len(r)})" for n, r in zip(names[1:], real[1:])]
        return (f"The stores do not all hold the same real images (by sha256): of the {len(real[0])} of {names[0]}, "
                + "; ".join(parts) + f". Distances compare only between stores that hold the same real images{scale}",
                False)
    if common:
        return (f"The stores share {len(common)} of their real images (by sha256; real images: {counts}): their "
                f"distances are not fully comparable{scale}", False)
    return (f"The stores share no real image (by sha256; real images: {counts}): their distances are not "
            f"comparable{scale}", False)


def compare_stores(stores, labels=None, cache: bool = True) -> pd.DataFrame:
    """Gap profiles of several stores side by side (different models or weights, renderers, sets),
    one line per (store, synthetic set).

    Parameters
    ----------
    stores : store paths / URLs or opened DataTrees.
    labels : one name per store (default :func:`store_names`: the path's stem).
    cache : use each store's up-to-date ``stats/`` cache when it has one.

    Returns
    -------
    DataFrame indexed by layer depth (0 = first layer), columns ``(line, field)``, one line per
    (store, set) named by :func:`line_labels`, with fields ``layer, relative_depth, fid, kid,
    patch_fd, n_real, n_synthetic`` and the gap profile's ``fid_lo, fid_hi, fid_floor, fid_ratio,
    c2st_auroc, c2st_p, c2st_lo, c2st_hi, c2st_chance``. ``relative_depth`` is the layer's place
    in its network, 0 (first stored layer) to 1 (last), so that networks with different numbers
    of layers share one axis.

    ``attrs["lines"]``: one dict per line (``line, store, set, model, weights,
    weights_trained``); ``attrs["note"]``: what the stores share (:func:`comparability`), and
    ``attrs["comparable"]``. A ``UserWarning`` carries the note when the stores do not hold the
    same real images (their distances are then not comparable; ``c2st_auroc`` and ``fid_ratio``
    are on one scale all the same). Whether networks agree:
    :func:`fakesegment_nb.agreement.network_agreement`.
    """
    trees = [as_tree(s) for s in stores]
    if not trees:
        raise FakesegmentError("compare_stores needs at least one store")
    names = store_names(list(stores)) if labels is None else [str(l) for l in labels]
    if len(names) != len(trees) or len(set(names)) != len(names):
        raise FakesegmentError("compare_stores needs one distinct label per store")
    note, comparable = comparability(trees, names)
    if not comparable:
        warnings.warn(note, UserWarning, stacklevel=2)
    fields = ["layer", "relative_depth", "fid", "kid", "patch_fd", "n_real", "n_synthetic", *GAP_FIELDS,
              *COMPARE_EXTRA]
    profiles = [gap_profile(t, cache=cache) for t in trees]
    sets = [list(pd.unique(p["set"])) for p in profiles]
    labels_ = iter(line_labels(names, sets))
    parts, lines = {}, []
    for name, t, p, ss in zip(names, trees, profiles, sets):
        for s in ss:
            line = next(labels_)
            df = p[p["set"] == s].reset_index(drop=True)
            df["relative_depth"] = np.arange(len(df)) / max(1, len(df) - 1)
            parts[line] = df[fields].rename_axis("depth")
            lines.append({"line": line, "store": name, "set": s, "model": t.attrs.get("model", "?"),
                          "weights": t.attrs.get("weights", "?"), "weights_trained": bool(t.attrs.get("weights_trained"))})
    out = pd.concat(parts, axis=1, names=["line", "field"])
    out.attrs.update(lines=lines, note=note, comparable=comparable)
    return out
