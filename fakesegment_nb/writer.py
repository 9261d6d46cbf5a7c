"""Appending images to a feature store (the schema is in DESIGN.md section 3; reading is in
:mod:`fakesegment_nb.store`).

Writing is append-only and crash-safe. Feature rows for new images are written first, into
space reserved past the end of the root; the root variables are appended next, and a commit
ends by setting the root attribute ``images_committed``, one atomic write: only that many rows
count as stored. (Appending a root variable grows it before its rows are written, so lengths
alone cannot say what is stored.) An interrupted run leaves at most some rows past that count,
which readers leave out and :meth:`StoreWriter.repair` trims before the next run goes on.
Stores from before the attribute count the shortest root variable.

After each commit (and whatever else changes the store's layout) the metadata of every group
and array is copied into the root's ``zarr.json`` (:func:`consolidate`), so that
``xr.open_datatree(path, engine="zarr")`` opens the store in one read and without a warning.
That copy follows the commit; it is never the commit. Readers that must see what is being
written (:func:`~fakesegment_nb.store.open_store`, and this writer) ignore it. It costs a read of
every group's and array's ``zarr.json`` (~50 ms a commit for a store of three layers on our
loaded 2-core VM, commits coming every few seconds).

Where the store lives (a folder or an fsspec URL) is :mod:`fakesegment_nb.targets`' business,
including what its writer lock can and cannot promise.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from .errors import ParameterError
from .store import COMMITTED, ROOT_VARS, STRING_VARS, as_strings, set_column
from .targets import StoreBusy, StoreTarget, store_target

__all__ = ["StoreBusy", "StoreWriter", "channel_chunk", "consolidate", "image_chunk"]

ROOT_CHUNK = 4096
CHUNK_BYTES = 2 * 1024 * 1024
MAX_IMAGES_PER_CHUNK = 16
IDENTITY_ATTRS = ("model", "weights", "layers", "input_size")
# Writing features takes CPU from the forward pass on the same cores, and zarr's cost is mostly
# per chunk (a task, thread hops, a new file: ~0.5 ms of kernel time each on our VMs): so chunks
# of up to CHUNK_BYTES holding all channels of a layer (every ssd300 layer, resnet50's at 224 px)
# and, for small layers, several images (4 of ssd300's 6 layers: 16 images a chunk; 2 for fc7),
# zstd level 1 (blosc's zstd+shuffle: ~1% more bytes for ~1.8x the CPU), and keys c.<i>.0.0.0 in
# the layer's folder, which need no new folder per chunk. Several images a chunk took the
# in-process overhead of extraction from 5.6% to 3.4% (medians of 5 paired runs); the rest was
# compared in one-off runs, the end-to-end effect is in benchmarks/bench_extract.py.
COMPRESSOR = ZstdCodec(level=1)
FLAT_KEYS = {"name": "default", "separator": "."}


def _power_of_two_fitting(most: int, item_bytes: int, chunk_bytes: int) -> int:
    """The largest power of two up to ``most`` whose items fit in ``chunk_bytes`` (at least 1)."""
    n = 1
    while n * 2 <= most and n * 2 * item_bytes <= chunk_bytes:
        n *= 2
    return n


def channel_chunk(channels: int, height: int, width: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Channels per chunk: all of them if their float16 maps fit in ``chunk_bytes``, else the
    largest power of two that does."""
    per_channel = max(1, height * width * 2)
    if channels * per_channel <= chunk_bytes:
        return channels
    return _power_of_two_fitting(channels, per_channel, chunk_bytes)


def image_chunk(channels: int, height: int, width: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Images per chunk: the largest power of two up to MAX_IMAGES_PER_CHUNK whose float16 maps
    fit in ``chunk_bytes`` (1 for layers that fill a chunk alone)."""
    return _power_of_two_fitting(MAX_IMAGES_PER_CHUNK, max(1, channels * height * width * 2), chunk_bytes)


def consolidate(store, storage_options: dict | None = None) -> bool:
    """Copy the metadata of every group and array of ``store`` (a path, URL or zarr store) into
    its root ``zarr.json``, so that plain ``xr.open_datatree(path, engine="zarr")`` reads it at
    once and quietly. Call it after writing any group or array (maps, statistics).

    Returns False, changing nothing, where the zarr store cannot hold consolidated metadata.
    """
    if not isinstance(store, zarr.abc.store.Store):
        store = store_target(store, storage_options).zarr_store
    if not store.supports_consolidated_metadata:
        return False
    with warnings.catch_warnings():
        # "not part of the Zarr format 3 specification": zarr-python and xarray read it
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(store, zarr_format=3)
    return True


class StoreWriter:
    """Appends images to a store; one writer at a time (see :meth:`locked`)."""

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None):
        self.target: StoreTarget = store_target(url, storage_options)
        self._group = None
        self._attrs = None

    @property
    def url(self) -> str:
        return self.target.url

    @property
    def storage_options(self) -> dict | None:
        return self.target.storage_options

    # -- plumbing ---------------------------------------------------------------------------
    def _open(self, mode: str) -> zarr.Group:
        # never the consolidated copy: it lags behind what this writer does (see the docstring)
        return zarr.open_group(self.target.zarr_store, mode=mode, zarr_format=3, use_consolidated=False)

    @property
    def group(self) -> zarr.Group:
        if self._group is None:
            self._group = self._open("a")
        return self._group

    def exists(self) -> bool:
        """True once :meth:`create` has finished (its last step writes the root attributes)."""
        try:
            g = self._open("r")
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
            return False
        return "layers" in g.attrs

    @contextmanager
    def locked(self) -> Iterator["StoreWriter"]:
        """Hold the store's writer lock; a second writer is refused at once, nothing is lost.

        Whether the lock is exclusive depends on where the store lives:
        ``self.target.exclusive`` (see :mod:`fakesegment_nb.targets`).
        """
        with self.target.lock():
            yield self

    # -- identity ---------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        if self._attrs is None:
            self._attrs = dict(self.group.attrs)
        return self._attrs

    def check_identity(self, attrs: dict) -> None:
        """Refuse to mix features of another model, weights, layers or input size."""
        have = self.attrs
        diffs = [f"{k} {have.get(k)!r} (this run: {attrs.get(k)!r})" for k in IDENTITY_ATTRS
                 if _norm(have.get(k)) != _norm(attrs.get(k))]
        if diffs:
            raise ParameterError("store", f"{self.url} was made with another network: " + "; ".join(diffs)
                                 + "; extract into another store")

    def create(self, attrs: dict, shapes: dict[str, tuple[int, int, int]]) -> None:
        """Create an empty store: root image table and one features array per layer."""
        self.target.clear()
        self._group = None
        g = self._open("a")
        for name in ("image", *ROOT_VARS):
            _root_array(g, name, 0)
        layers = g.require_group("layers")
        for name, (c, h, w) in shapes.items():
            lg = layers.require_group(name)
            lg.create_array("features", shape=(0, c, h, w), chunks=(image_chunk(c, h, w), channel_chunk(c, h, w), h, w),
                            chunk_key_encoding=FLAT_KEYS,
                            dtype="float16", fill_value=np.nan, compressors=[COMPRESSOR],
                            dimension_names=("image", "channel", "y", "x"))
            ch = lg.create_array("channel", shape=(c,), chunks=(c,), dtype="int32",
                                 dimension_names=("channel",))
            ch[:] = np.arange(c, dtype="int32")
        # last: a store whose attributes name its layers is complete (see exists)
        g.attrs.update({**attrs, COMMITTED: 0,
                        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        self._attrs = None
        self._consolidate()

    # -- state ------------------------------------------------------------------------------
    def _root_arrays(self) -> dict[str, zarr.Array]:
        g = self.group
        return {n: g[n] for n in ("image", *ROOT_VARS) if n in g}  # no ``set`` before sets existed

    def _feature_arrays(self) -> dict[str, zarr.Array]:
        return {n: self.group[f"layers/{n}/features"] for n in self.attrs["layers"]}

    def committed(self) -> int:
        """Rows that count as stored (see the module docstring)."""
        n = self.attrs.get(COMMITTED)
        return int(n) if n is not None else min(a.shape[0] for a in self._root_arrays().values())

    def repair(self) -> int:
        """Trim what an interrupted run left past the committed length; return that length."""
        n = self.committed()
        trimmed = False
        for a in [*self._root_arrays().values(), *self._feature_arrays().values()]:
            if a.shape[0] != n:
                a.resize((n, *a.shape[1:]))
                trimmed = True
        self.target.remove_partials()
        if trimmed:
            self._consolidate()
        return n

    def stored(self) -> pd.DataFrame:
        """Committed image ids, domains, sets, hashes, pairs and paths, in store order (``set`` as
        :func:`~fakesegment_nb.store.image_table` reads it)."""
        n = self.committed()
        g = self.group
        df = pd.DataFrame({k: as_strings(g[k][:n]) for k in ("image", "domain", "sha256", "pair", "path")})
        df["set"] = set_column(df["domain"].to_numpy(), g["set"][:n] if "set" in g else None)
        return df

    # -- appending --------------------------------------------------------------------------
    def reserve(self, n_new: int) -> int:
        """Grow every features array by ``n_new`` rows past the committed length; return the start."""
        start = self.committed()
        for a in self._feature_arrays().values():
            a.resize((start + n_new, *a.shape[1:]))
        return start

    def layers_sharing_chunks(self) -> list[str]:
        """Layers whose chunks hold several images: writers running at once must not split them."""
        return [n for n, a in self._feature_arrays().items() if a.chunks[0] > 1]

    def write_features(self, start: int, features: dict[str, np.ndarray]) -> None:
        """Write float16 rows ``start:start+B`` of each layer through xarray."""
        for name, arr in features.items():
            ds = xr.Dataset({"features": (("image", "channel", "y", "x"), arr.astype(np.float16, copy=False))})
            # every chunk holds features: skip zarr's scan of each one for the fill value
            ds.to_zarr(self.target.zarr_store, group=f"layers/{name}",
                       region={"image": slice(start, start + arr.shape[0])},
                       consolidated=False, zarr_format=3, write_empty_chunks=True)

    def commit(self, rows: pd.DataFrame) -> None:
        """Append the root rows (columns ``image`` + ROOT_VARS): from now on they count as stored.

        Rows without a ``set`` column get the legacy set name for synthetic images and ``""``
        for real ones.
        """
        rows = rows.assign(set=set_column(rows["domain"].to_numpy(),
                                          rows["set"].to_numpy() if "set" in rows else None))
        self._add_set_variable()
        n = self.committed() + len(rows)
        ds = xr.Dataset({k: ("image", _column(rows, k)) for k in ROOT_VARS},
                        coords={"image": _column(rows, "image")},
                        attrs=self.attrs)  # xarray rewrites the root attributes on append
        ds.to_zarr(self.target.zarr_store, append_dim="image", consolidated=False, zarr_format=3)
        # the commit itself: one rewrite of the root's zarr.json
        self._attrs = {**self.attrs, COMMITTED: n}
        self._open("r+").attrs.put(self._attrs)
        self._consolidate()

    def _add_set_variable(self) -> None:
        """Give a store from before sets its ``set`` variable (written before any row is appended:
        an interrupted write leaves ``""``, which reads as the legacy set name for synthetic rows)."""
        g = self.group
        if "set" in g:
            return
        n = self.committed()
        arr = _root_array(g, "set", n)
        if n:
            arr[:] = set_column(as_strings(g["domain"][:n]))

    def drop_stale_maps(self) -> list[str]:
        """Delete ``maps/<method>`` groups computed before images were added; return their names."""
        g, n, dropped = self.group, self.committed(), []
        if "maps" not in g:
            return dropped
        for name, sub in list(g["maps"].groups()):
            if any(a.shape[0] != n for _, a in sub.arrays() if "image" in (a.metadata.dimension_names or ())):
                del g["maps"][name]
                dropped.append(f"maps/{name}")
        if dropped:
            self._consolidate()
        return dropped

    def set_pairs(self, pairs: dict[str, str]) -> None:
        """Rewrite the ``pair`` of stored images named in ``pairs`` (a later run may add partners)."""
        g = self.group
        n = self.committed()
        ids = as_strings(g["image"][:n])
        cur = as_strings(g["pair"][:n])
        new = np.array([pairs.get(i, p) for i, p in zip(ids, cur)], dtype=object)
        if n and list(new) != list(cur):
            g["pair"][:n] = new

    def _consolidate(self) -> None:
        """Refresh the consolidated copy of the metadata (after the change it follows)."""
        consolidate(self.target.zarr_store)
        self._group = None  # its cached attributes and shapes are stale


def _root_array(g: zarr.Group, name: str, n: int) -> zarr.Array:
    is_str = name in STRING_VARS
    return g.create_array(name, shape=(n,), chunks=(ROOT_CHUNK,), dtype=str if is_str else "int32",
                          fill_value="" if is_str else 0, dimension_names=("image",))


def _column(rows: pd.DataFrame, k: str) -> np.ndarray:
    if k in STRING_VARS:
        return np.asarray(rows[k].astype(str).to_numpy(), dtype=object)
    return rows[k].to_numpy(dtype="int32")


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v
