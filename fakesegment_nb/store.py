"""The feature store: a zarr v3 group read through xarray (schema in DESIGN.md section 3).

Readers see only the rows a writer has committed (the root attribute ``images_committed``);
how stores are written, and why that count is the commit, is in :mod:`fakesegment_nb.writer`.
Stores from before the attribute count the shortest root variable.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from .errors import FakesegmentError
from .schema import COMMITTED, LEGACY_SET, ROOT_VARS, STRING_VARS, as_strings, image_rows, set_column
from .targets import is_local, local_path, normalise

__all__ = ["open_store", "as_tree", "image_table", "set_names", "partners", "layer_names", "feature_layer",
           "feature_map", "as_strings", "image_rows", "set_column", "ROOT_VARS", "STRING_VARS", "COMMITTED",
           "LEGACY_SET"]  # the image table's names and helpers live in schema.py (no xarray)


# --------------------------------------------------------------------------------------------
# reading


_STORE_CHUNKS: dict = {}


def open_store(path: str | os.PathLike, storage_options: dict | None = None,
               chunks: dict | None = _STORE_CHUNKS) -> xr.DataTree:
    """Open a feature store lazily as an :class:`xarray.DataTree`.

    Parameters
    ----------
    path : local path or fsspec URL of the zarr store.
    storage_options : passed to fsspec for URLs.
    chunks : dask chunks, ``{}`` (default) for the store's own chunks; ``None`` for lazily
        indexed numpy arrays without dask (fastest for single maps).

    Returns
    -------
    DataTree with the image table at the root and ``layers/<name>/features`` below; variables
    are read only when asked for.
    """
    path = normalise(path)
    if is_local(path) and not (local_path(path) / "zarr.json").is_file():
        raise FakesegmentError(f"{path} is not a feature store (no zarr.json); run `fakesegment extract` first")
    opts = dict(engine="zarr", consolidated=False, zarr_format=3,
                chunks=None if chunks is None else dict(chunks), storage_options=storage_options)
    try:
        groups = xr.open_groups(path, **opts)
    except FileNotFoundError:
        raise FakesegmentError(f"{path} is not a feature store") from None
    except ValueError as exc:
        if "conflicting sizes" not in str(exc):
            raise
        groups = _open_groups_mid_commit(path, opts)
    root = groups["/"]
    if "domain" not in root or "image" not in root.coords:
        raise FakesegmentError(f"{path} is a zarr group but not a feature store (no image table)")
    n = _committed_rows(root.attrs, root.sizes["image"])
    for name, ds in list(groups.items()):
        if "image" not in ds.dims or ds.sizes["image"] == n:
            continue
        if ds.sizes["image"] > n:  # rows of an uncommitted batch
            groups[name] = ds.isel(image=slice(0, n))
        else:  # derived data (maps) from before images were added
            warnings.warn(f"{name.lstrip('/')} covers {ds.sizes['image']} of {n} images and is left out; "
                          "compute it again (e.g. `fakesegment maps`)", stacklevel=2)
            del groups[name]
    return xr.DataTree.from_dict(groups)


def _open_groups_mid_commit(path: str, opts: dict) -> dict[str, xr.Dataset]:
    """Open a store whose root arrays differ in length (a commit cut short, or in progress).

    Each variable is opened on its own and cut to the committed rows.
    """
    top = zarr.open_group(path, mode="r", storage_options=opts["storage_options"], use_consolidated=False)
    n = _committed_rows(top.attrs, min(top[v].shape[0] for v in ("image", *ROOT_VARS) if v in top))

    def open_group(name: str, node: zarr.Group) -> xr.Dataset:
        names = [k for k, _ in node.arrays()]
        parts = []
        for k in names:
            ds = xr.open_dataset(path, group=name, drop_variables=[o for o in names if o != k], **opts)
            parts.append(ds.isel(image=slice(0, n)) if "image" in ds.dims else ds)
        return xr.merge(parts, combine_attrs="override") if parts else xr.Dataset(attrs=dict(node.attrs))

    groups = {"/": open_group("/", top)}
    for name, node in top.groups():
        stack = [(name, node)]
        while stack:
            gname, g = stack.pop()
            groups["/" + gname] = open_group(gname, g)
            stack.extend((f"{gname}/{k}", sub) for k, sub in g.groups())
    return groups


def _committed_rows(attrs, rows: int) -> int:
    """What counts as stored, given the root's attributes and the rows its arrays all have."""
    return min(rows, int(attrs.get(COMMITTED, rows)))


def as_tree(store, **open_kwargs) -> xr.DataTree:
    """``store`` itself if it is an opened DataTree, else :func:`open_store` ``(store, **open_kwargs)``:
    what every function taking "a store path, URL or DataTree" starts with."""
    return store if isinstance(store, xr.DataTree) else open_store(store, **open_kwargs)


def image_table(store) -> pd.DataFrame:
    """The root variables as a DataFrame indexed by image id (reads nothing else).

    Columns :data:`ROOT_VARS`: ``domain``, ``set`` (a synthetic image's set name, ``""`` for
    real images; :data:`LEGACY_SET` for the synthetic images of a store written before sets
    existed), ``path``, ``pair``, ``height``, ``width``, ``sha256``.
    """
    tree = as_tree(store)
    root = tree.to_dataset(inherit=False)
    ds = root[[v for v in ROOT_VARS if v in root]]
    df = ds.load().to_dataframe()
    for col in STRING_VARS:
        if col in df:
            df[col] = as_strings(df[col].to_numpy())
    df.index = pd.Index(as_strings(df.index.to_numpy()), name="image")
    df["set"] = set_column(df["domain"].to_numpy(), df["set"].to_numpy() if "set" in df else None)
    return df[[v for v in ROOT_VARS if v in df]]


def set_names(store) -> list[str]:
    """The store's synthetic set names, in store order (the order their first images were stored).

    ``store`` is a store path, URL, DataTree, or an :func:`image_table`."""
    table = store if isinstance(store, pd.DataFrame) else image_table(store)
    sets = table["set"] if "set" in table else pd.Series(set_column(table["domain"].to_numpy()), index=table.index)
    return list(pd.unique(sets[table["domain"].to_numpy() == "synthetic"].to_numpy()))


def partners(images: pd.DataFrame) -> pd.DataFrame:
    """Every synthetic image whose ``pair`` is a stored real image: its real partner.

    ``images`` is :func:`image_table` (or any frame indexed by image id with ``domain`` and
    ``pair`` columns, and ``set`` where there are several sets). Returns one row per such
    synthetic image, in table order, with columns ``image`` and ``pair`` (the two ids), ``i_syn``
    and ``i_real`` (their row positions in ``images``) and ``set`` (the synthetic image's set).
    A pair naming an image that is not stored, or that is not real, is no partner.

    Pairs are found within a set (a synthetic image's ``pair`` is a real image matched to it in
    its own set's extraction), so one real image may be the partner of one image in each set:
    select a set's rows with ``partners(t)[lambda p: p["set"] == name]``.
    """
    pos = pd.Series(np.arange(len(images)), index=images.index)
    real_ids = set(images.index[images["domain"] == "real"])
    syn = images[(images["domain"] == "synthetic") & images["pair"].isin(real_ids)]
    sets = (set_column(syn["domain"].to_numpy(), syn["set"].to_numpy()) if "set" in syn
            else set_column(syn["domain"].to_numpy()))
    return pd.DataFrame({"image": syn.index.to_numpy(dtype=object), "pair": syn["pair"].to_numpy(dtype=object),
                         "i_syn": pos[syn.index].to_numpy(dtype=int), "i_real": pos[syn["pair"]].to_numpy(dtype=int),
                         "set": sets})


def layer_names(store) -> list[str]:
    """Layer names in network order, as recorded in the store's attributes."""
    tree = as_tree(store)
    return list(tree.attrs.get("layers", list(tree["layers"].children)))


def feature_layer(store, layer: str) -> xr.DataArray:
    """One layer's features ``(image, channel, y, x)``, lazy (dask), float16 as stored."""
    tree = as_tree(store)
    if layer not in tree["layers"].children:
        raise FakesegmentError(f"the store has no layer {layer!r}; it has {', '.join(layer_names(tree))}")
    return tree["layers"][layer]["features"]


def feature_map(store, image: str, layer: str, channel: int) -> xr.DataArray:
    """One ``(y, x)`` feature map as float32, reading only the chunk that holds it."""
    da = feature_layer(store, layer)
    try:
        out = da.sel(image=image).isel(channel=int(channel))
    except KeyError:
        raise FakesegmentError(f"the store has no image {image!r}") from None
    except IndexError:
        raise FakesegmentError(f"layer {layer} has {da.sizes['channel']} channels, not {channel}") from None
    return out.astype(np.float32).compute()
