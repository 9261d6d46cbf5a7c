"""Appending images to a feature store (the schema is in DESIGN.md section 3; reading is in
:mod:`fakesegment_nb.store`).

Writing is append-only and crash-safe, and the store is a consistent DataTree at every moment.

**What is written, in order.** A batch's feature rows are written past the committed rows, into
chunks only: every array keeps its stored shape, so nothing a reader aligns grows. A commit,
every few seconds, then (1) writes the new root rows (ids, domains, sets, ...) the same way, (2)
grows every layer's and root array's shape to the new length, and (3) rewrites the root's
``zarr.json`` once: the attribute ``images_committed`` and the consolidated metadata of every
group and array, shown at that many images (:func:`fakesegment_nb.snapshot.publish`). Step 3
is the commit: only that many rows count as stored.

**What a reader sees.** Plain ``xr.open_datatree(path, engine="zarr")`` reads the consolidated
metadata, so it sees the last commit, whole, at any moment of a run and after a ``kill -9``: all
layers and the root with the same ``image`` length, the rows of that commit and nothing of the
next, and no warning. (It reads lazily: data read long after opening come from the store as it
is then; committed rows never change, but maps replaced meanwhile may.) Readers that open the
arrays' own metadata instead (``consolidated=False``, :func:`~fakesegment_nb.store.open_store`)
may find, during a commit's step 2 or after a kill there, arrays of different lengths;
``open_store`` cuts them to the committed rows and :meth:`StoreWriter.repair` trims them before
the next run goes on. Stores from before the attribute count the shortest root variable.

**Other writers** (maps, statistics) write their own groups and then call :func:`consolidate`,
which publishes a snapshot that includes them; while an extraction holds the store, it leaves
that to the extraction's next commit. Maps are written a batch of images at a time into a group
created with no images (:func:`rows_view`), so no snapshot shows them until they are complete
(:func:`fakesegment_nb.maps.group.write_maps`). A group of maps that covers fewer images than the root
(images were added since) is left out of every snapshot, and :meth:`StoreWriter.drop_stale_maps`
deletes it when the run ends.

A commit costs a read of every group's and array's ``zarr.json`` for the snapshot (~50 ms for
a store of three layers on our loaded 2-core VM, commits coming every few seconds).

Where the store lives (a folder or an fsspec URL) is :mod:`fakesegment_nb.targets`' business,
including what its writer lock can and cannot promise.
"""

from __future__ import annotations

import datetime as _dt
import os
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync

from .errors import ParameterError
from .snapshot import IMAGE_DIM, publish
from .schema import COMMITTED, ROOT_VARS, STRING_VARS, as_strings, set_column
from .targets import StoreBusy, StoreTarget, store_target

__all__ = ["StoreBusy", "StoreWriter", "channel_chunk", "consolidate", "image_chunk", "rows_view"]

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
    """Publish the metadata of every group and array of ``store`` (a path or URL) in its root
    ``zarr.json``, so that plain ``xr.open_datatree(path, engine="zarr")`` reads it at once,
    quietly and consistently (:mod:`fakesegment_nb.snapshot`). Call it after writing any group
    or array (maps, statistics).

    Returns False, changing nothing, where an extraction is writing the store (its next commit
    publishes the new group) or where the store cannot hold consolidated metadata.
    """
    if isinstance(store, zarr.abc.store.Store):
        target, zstore = None, store
    else:
        target = store_target(store, storage_options)
        zstore = target.zarr_store
    if not zstore.supports_consolidated_metadata:
        return False
    if target is None:
        _publish_current(zstore)
        return True
    try:
        with target.lock():
            _publish_current(zstore)
    except StoreBusy:
        return False
    return True


def _publish_current(zstore) -> None:
    attrs = dict(zarr.open_group(zstore, mode="r", zarr_format=3, use_consolidated=False).attrs)
    publish(zstore, attrs)


class StoreWriter:
    """Appends images to a store; one writer at a time (see :meth:`locked`)."""

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None):
        self.target: StoreTarget = store_target(url, storage_options)
        self._group = None
        self._attrs = None
        self._layer_arrays: dict[str, zarr.Array] = {}

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
        self._layer_arrays = {}
        # the root first, empty and consolidated: until the last step a reader finds an empty tree
        publish(self.target.zarr_store, {}, n=0)
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
        self._publish({**attrs, COMMITTED: 0,
                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})

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
        """Trim what an interrupted run left past the committed length (array shapes, and chunks
        of rows written but never committed); return that length."""
        n = self.committed()
        trimmed = False
        for a in [*self._root_arrays().values(), *self._feature_arrays().values()]:
            if a.shape[0] != n:
                a.resize((n, *a.shape[1:]))
                trimmed = True
        for a in self._feature_arrays().values():
            trimmed |= _delete_rows_past(a, n)
        self.target.remove_partials()
        if trimmed or not self._has_snapshot():
            self._publish(self.attrs)
        return n

    def _has_snapshot(self) -> bool:
        store = self.target.zarr_store
        if not store.supports_consolidated_metadata:
            return True
        return zarr.open_group(store, mode="r", zarr_format=3).metadata.consolidated_metadata is not None

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
        """The first row of the next ``n_new`` images: the committed length. Nothing is resized:
        rows are written past the arrays' shapes (:meth:`write_features`) and counted at
        :meth:`commit`."""
        return self.committed()

    def layers_sharing_chunks(self) -> list[str]:
        """Layers whose chunks hold several images: writers running at once must not split them."""
        return [n for n, a in self._feature_arrays().items() if a.chunks[0] > 1]

    def write_features(self, start: int, features: dict[str, np.ndarray]) -> None:
        """Write float16 rows ``start:start+B`` of each layer into its chunks, past the array's
        stored shape if need be (which only :meth:`commit` grows: see the module docstring)."""
        for name, arr in features.items():
            if name not in self._layer_arrays:  # kept: only the shape changes, and views are made past it
                self._layer_arrays[name] = zarr.open_array(self.target.zarr_store, path=f"layers/{name}/features",
                                                           mode="r+", zarr_format=3)
            rows = rows_view(self._layer_arrays[name], start + arr.shape[0])
            rows[start:start + arr.shape[0]] = arr.astype(np.float16, copy=False)

    def commit(self, rows: pd.DataFrame) -> None:
        """Append the root rows (columns ``image`` + ROOT_VARS): from now on they count as stored.

        Rows without a ``set`` column get the legacy set name for synthetic images and ``""``
        for real ones.
        """
        rows = rows.assign(set=set_column(rows["domain"].to_numpy(),
                                          rows["set"].to_numpy() if "set" in rows else None))
        self._add_set_variable()
        start = self.committed()
        n = start + len(rows)
        root = self._root_arrays()
        for name, a in root.items():  # 1. the rows, past the stored shapes
            rows_view(a, n)[start:n] = _column(rows, name)
        for a in [*self._feature_arrays().values(), *root.values()]:  # 2. the shapes
            if a.shape[0] != n:
                a.resize((n, *a.shape[1:]))
        self._publish({**self.attrs, COMMITTED: n})  # 3. the commit: one write of the root's zarr.json

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
            if any(a.shape[0] != n for _, a in sub.arrays() if IMAGE_DIM in (a.metadata.dimension_names or ())):
                del g["maps"][name]  # out of every snapshot since images were added
                dropped.append(f"maps/{name}")
        if dropped:
            self._publish(self.attrs)
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

    def publish(self) -> None:
        """Publish the store as it stands (a snapshot of the committed rows, every group that
        covers them): what :func:`consolidate` does, for the lock's holder."""
        self._publish(self.attrs)

    def _publish(self, attrs: dict) -> None:
        """Write the root attributes and the snapshot at ``attrs[COMMITTED]`` rows, in one write."""
        publish(self.target.zarr_store, attrs)
        self._attrs = dict(attrs)
        self._group = None  # its cached attributes and shapes are stale


def _root_array(g: zarr.Group, name: str, n: int) -> zarr.Array:
    is_str = name in STRING_VARS
    return g.create_array(name, shape=(n,), chunks=(ROOT_CHUNK,), dtype=str if is_str else "int32",
                          fill_value="" if is_str else 0, dimension_names=("image",))


def rows_view(a: zarr.Array, rows: int, axis: int = 0) -> zarr.Array:
    """``a`` as if it had ``rows`` rows along ``axis``, for writing past its stored shape; nothing
    is resized (readers of the array's own metadata, and every snapshot, still see the stored
    shape until ``a.resize``). Every chunk written is stored: zarr's scan for all-fill chunks is
    skipped."""
    meta = a.metadata.to_dict()
    meta["shape"] = list(meta["shape"])
    meta["shape"][axis] = max(rows, a.shape[axis])
    return zarr.Array.from_dict(a.store_path, meta).with_config({"write_empty_chunks": True})


def _delete_rows_past(a: zarr.Array, n: int) -> bool:
    """Delete the chunks of ``a`` that lie wholly past row ``n`` (rows written by a run that
    never committed them); True if there were any. Looks at the first such chunk, and lists the
    array's keys only if it exists."""
    per = a.chunks[0]
    first = -(-n // per)
    zeros = (0,) * (a.ndim - 1)
    store = a.store_path.store
    if not sync(store.exists(f"{a.store_path.path}/{a.metadata.encode_chunk_key((first, *zeros))}")):
        return False
    top = first + 1
    keys = sync(_list(store, a.store_path.path))
    for k in keys:
        try:
            top = max(top, int(k.split(".")[1]) + 1) if k.startswith("c.") else top
        except (IndexError, ValueError):
            continue
    grown = rows_view(a, top * per)
    grown.resize((n, *a.shape[1:]))  # deletes the chunks past row n; those before stay
    return True


async def _list(store, prefix: str) -> list[str]:
    return [k async for k in store.list_dir(prefix)]


def _column(rows: pd.DataFrame, k: str) -> np.ndarray:
    if k in STRING_VARS:
        return np.asarray(rows[k].astype(str).to_numpy(), dtype=object)
    return rows[k].to_numpy(dtype="int32")


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v
