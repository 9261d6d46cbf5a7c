"""The statistics cache in a store's ``stats/`` group, kept per synthetic set.

``stats/<table>`` (one group per table of :data:`fakesegment_nb.stattables.TABLES`) holds the
table's rows of every set, dimension ``row``, one variable per column; its attribute
``fingerprints`` maps each set to what that set's rows depend on (:func:`fingerprints`), and
``stats/layers`` says ``has_pairs`` (a store without pairs has no ``stats/pairs``). A set's rows
are up to date while its fingerprint is: adding a set leaves the other sets' rows valid (their
figures do not depend on it), adding real images makes every set's stale. Caches written before
sets (a single ``fingerprint`` attribute, no ``set`` column) read as stale.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import xarray as xr

from . import __version__
from .stattables import COLUMNS, STRING_COLUMNS, TABLES, StatsTables, by_set, table
from .store import as_strings, as_tree, image_table, set_names
from .writer import consolidate

__all__ = ["fingerprints", "cached_sets", "write_cache", "merge_tables"]

_ATTRS = ("model", "weights", "layers", "input_size")


def fingerprints(store) -> dict[str, str]:
    """Per synthetic set (store order), what its cached statistics depend on: the network, the
    package version, the real images (ids and contents, in order) and the set's own images
    (ids, contents and pairs, in order)."""
    tree = as_tree(store)
    images = image_table(tree)
    base = hashlib.sha256()
    base.update(json.dumps({k: tree.attrs.get(k) for k in _ATTRS}, sort_keys=True, default=str).encode())
    base.update(__version__.encode())
    real = images[images["domain"] == "real"]
    base.update("\0".join(real.index.astype(str)).encode())
    base.update("\0".join(real["sha256"].astype(str)).encode())
    out = {}
    for name in set_names(images):
        h = base.copy()
        mine = images[(images["domain"] == "synthetic") & (images["set"] == name)]
        h.update(b"\1" + name.encode())
        for part in (mine.index, mine["sha256"], mine["pair"]):
            h.update(b"\1" + "\0".join(part.astype(str)).encode())
        out[name] = h.hexdigest()
    return out


def cached_sets(store) -> tuple[StatsTables | None, list[str]]:
    """The cached tables cut to the sets whose rows are up to date, and those sets (store order);
    ``(None, [])`` when none is (or there is no cache)."""
    tree = as_tree(store)
    if "stats" not in tree.children or "layers" not in tree["stats"].children:
        return None, []
    current = fingerprints(tree)
    nodes = {name: tree["stats"].children.get(name) for name in TABLES}
    if nodes["pairs"] is None and tree["stats/layers"].attrs.get("has_pairs") is not False:
        return None, []
    fresh = set(current)
    for node in nodes.values():
        if node is None:
            continue
        stored = node.attrs.get("fingerprints")
        stored = stored if isinstance(stored, dict) else {}
        fresh &= {s for s, fp in current.items() if stored.get(s) == fp}
    fresh = [s for s in current if s in fresh]
    if not fresh or any(nodes[n] is None for n in TABLES if n != "pairs"):
        return None, []
    out = {}
    for name, columns in COLUMNS.items():
        if nodes[name] is None:  # no pairs
            out[name] = table([], columns)
            continue
        df = nodes[name].to_dataset(inherit=False).load().to_dataframe().reset_index(drop=True)
        if not set(columns) <= set(df.columns):
            return None, []  # written by a version with fewer columns
        for col in STRING_COLUMNS:
            if col in df:
                df[col] = as_strings(df[col].to_numpy())
        if "rank" in df:
            df["rank"] = df["rank"].round().astype("Int64")
        out[name] = by_set([df], fresh, columns)
    return StatsTables(**out), fresh


def merge_tables(parts: list[StatsTables], order: list[str]) -> StatsTables:
    """One :class:`StatsTables` from tables of disjoint sets, set by set in ``order``."""
    return StatsTables(**{name: by_set([p[name] for p in parts], order, columns) for name, columns in COLUMNS.items()})


def write_cache(url: str, tables: StatsTables, prints: dict[str, str]) -> None:
    """Cache ``tables`` (every set's rows) in the store at ``url``, each set under its fingerprint."""
    import zarr

    attrs = {"fingerprints": dict(prints), "has_pairs": not tables.pairs.empty}
    for name in TABLES:
        df = tables[name]
        if df.empty:
            continue
        ds = xr.Dataset({c: ("row", df[c].to_numpy(dtype=object) if df[c].dtype == object
                              else df[c].to_numpy(dtype=float, na_value=np.nan) if c == "rank"
                              else df[c].to_numpy())
                         for c in df.columns}, attrs=attrs)
        ds.to_zarr(url, group=f"stats/{name}", mode="w", consolidated=False, zarr_format=3)
    if tables.pairs.empty:
        g = zarr.open_group(url, mode="a", zarr_format=3, use_consolidated=False)
        if "stats" in g and "pairs" in g["stats"]:
            del g["stats"]["pairs"]
    consolidate(url)  # plain xr.open_datatree users see the new tables at once
