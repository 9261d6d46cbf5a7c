"""The feature store: a zarr v3 group read through xarray (schema in DESIGN.md section 3).

Writing is append-only and crash-safe. Feature rows for new images are written first, into
space reserved past the end of the root; the root variables are appended next, and a commit
ends by setting the root attribute ``images_committed``, one atomic write: only that many rows
count as stored. (Appending a root variable grows it before its rows are written, so lengths
alone cannot say what is stored.) An interrupted run leaves at most some rows past that count,
which readers leave out and :meth:`StoreWriter.repair` trims before the next run goes on.
Stores from before the attribute count the shortest root variable.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from .errors import FakesegmentError, ParameterError

__all__ = ["open_store", "as_tree", "image_table", "partners", "layer_names", "feature_layer", "feature_map",
           "as_strings", "image_rows", "StoreWriter", "StoreBusy", "channel_chunk", "image_chunk", "ROOT_VARS",
           "IDENTITY_ATTRS", "COMMITTED"]

ROOT_VARS = ("domain", "path", "pair", "height", "width", "sha256")
_STR_VARS = ("image", "domain", "path", "pair", "sha256")
ROOT_CHUNK = 4096
CHUNK_BYTES = 2 * 1024 * 1024
MAX_IMAGES_PER_CHUNK = 16
IDENTITY_ATTRS = ("model", "weights", "layers", "input_size")
COMMITTED = "images_committed"  # root attribute: rows that count as stored
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


def _is_local(url: str) -> bool:
    return "://" not in str(url) or str(url).startswith("file://")


def _normalise(url) -> str:
    """``file://`` URLs become plain paths (zarr's LocalStore: atomic writes, flock)."""
    return str(url).removeprefix("file://")


def _local_path(url: str) -> Path:
    return Path(_normalise(url))


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
    path = _normalise(path)
    if _is_local(path) and not (_local_path(path) / "zarr.json").is_file():
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
    top = zarr.open_group(path, mode="r", storage_options=opts["storage_options"])
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
    """The root variables as a DataFrame indexed by image id (reads nothing else)."""
    tree = as_tree(store)
    ds = tree.to_dataset(inherit=False)[list(ROOT_VARS)]
    df = ds.load().to_dataframe()
    for col in _STR_VARS:
        if col in df:
            df[col] = as_strings(df[col].to_numpy())
    df.index = pd.Index(as_strings(df.index.to_numpy()), name="image")
    return df


def partners(images: pd.DataFrame) -> pd.DataFrame:
    """Every synthetic image whose ``pair`` is a stored real image: its real partner.

    ``images`` is :func:`image_table` (or any frame indexed by image id with ``domain`` and
    ``pair`` columns). Returns one row per such synthetic image, in table order, with columns
    ``image`` and ``pair`` (the two ids) and ``i_syn`` and ``i_real`` (their row positions in
    ``images``). A pair naming an image that is not stored, or that is not real, is no partner.
    """
    pos = pd.Series(np.arange(len(images)), index=images.index)
    real_ids = set(images.index[images["domain"] == "real"])
    syn = images[(images["domain"] == "synthetic") & images["pair"].isin(real_ids)]
    return pd.DataFrame({"image": syn.index.to_numpy(dtype=object), "pair": syn["pair"].to_numpy(dtype=object),
                         "i_syn": pos[syn.index].to_numpy(dtype=int), "i_real": pos[syn["pair"]].to_numpy(dtype=int)})


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


def image_rows(entries, sizes) -> pd.DataFrame:
    """The root rows of a commit (:meth:`StoreWriter.commit`): one per image, columns ``image``
    and :data:`ROOT_VARS`, from entries with ``image, domain, path, pair, sha256`` attributes
    (:class:`fakesegment_nb.manifest.Entry`) and their decoded ``(height, width)``."""
    return pd.DataFrame({"image": [e.image for e in entries], "domain": [e.domain for e in entries],
                         "path": [e.path for e in entries], "pair": [e.pair for e in entries],
                         "height": [s[0] for s in sizes], "width": [s[1] for s in sizes],
                         "sha256": [e.sha256 for e in entries]})


# --------------------------------------------------------------------------------------------
# writing


class StoreBusy(FakesegmentError):
    pass


class StoreWriter:
    """Appends images to a store; one writer at a time (see :meth:`locked`)."""

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None):
        self.url = _normalise(url)
        self.storage_options = storage_options
        self._group = None
        self._attrs = None
        self._local_store = None

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def group(self) -> zarr.Group:
        if self._group is None:
            self._group = zarr.open_group(self.url, mode="a", zarr_format=3,
                                          storage_options=None if _is_local(self.url) else self.storage_options)
        return self._group

    def exists(self) -> bool:
        """True once :meth:`create` has finished (its last step writes the root attributes)."""
        try:
            g = zarr.open_group(self.url, mode="r", storage_options=self._remote_options())
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
            return False
        return "layers" in g.attrs

    @contextmanager
    def locked(self) -> Iterator["StoreWriter"]:
        """Hold the store's writer lock; a second writer is refused at once, nothing is lost.

        Local stores use ``flock`` on the store folder (released by the kernel if the process
        dies); other URLs use a ``fakesegment.lock`` key created exclusively.
        """
        if _is_local(self.url):
            path = _local_path(self.url)
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreBusy(f"another process is extracting into {self.url}; "
                                    "run again when it has finished") from None
                yield self
            finally:
                os.close(fd)
            return
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))
        key = root.rstrip("/") + ".fakesegment.lock"
        if fs.exists(key):
            raise StoreBusy(f"{self.url} is locked by another extraction ({key}); "
                            "if none is running, delete that key")
        fs.pipe(key, f"{os.getpid()}@{os.uname().nodename}".encode())
        try:
            yield self
        finally:
            fs.rm(key)

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
        if _is_local(self.url):
            # Empty the folder but keep it: the writer lock is held on this very folder.
            root = _local_path(self.url)
            root.mkdir(parents=True, exist_ok=True)
            for child in root.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            g = zarr.open_group(self.url, mode="a", zarr_format=3)
        else:
            g = zarr.open_group(self.url, mode="w", zarr_format=3, storage_options=self.storage_options)
        for name in ("image", *ROOT_VARS):
            is_str = name in _STR_VARS
            g.create_array(name, shape=(0,), chunks=(ROOT_CHUNK,), dtype=str if is_str else "int32",
                           fill_value="" if is_str else 0, dimension_names=("image",))
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
        self._group = self._attrs = None

    # -- state ------------------------------------------------------------------------------
    def _root_arrays(self) -> dict[str, zarr.Array]:
        return {n: self.group[n] for n in ("image", *ROOT_VARS)}

    def _feature_arrays(self) -> dict[str, zarr.Array]:
        return {n: self.group[f"layers/{n}/features"] for n in self.attrs["layers"]}

    def committed(self) -> int:
        """Rows that count as stored (see the module docstring)."""
        n = self.attrs.get(COMMITTED)
        return int(n) if n is not None else min(a.shape[0] for a in self._root_arrays().values())

    def repair(self) -> int:
        """Trim what an interrupted run left past the committed length; return that length."""
        n = self.committed()
        for a in [*self._root_arrays().values(), *self._feature_arrays().values()]:
            if a.shape[0] != n:
                a.resize((n, *a.shape[1:]))
        if _is_local(self.url):
            for p in _local_path(self.url).rglob("*.partial"):
                p.unlink(missing_ok=True)
        return n

    def stored(self) -> pd.DataFrame:
        """Committed image ids, domains and hashes."""
        n = self.committed()
        g = self.group
        return pd.DataFrame({k: _strings(g[k][:n]) for k in ("image", "domain", "sha256", "pair")})

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
            ds.to_zarr(self._target, group=f"layers/{name}", region={"image": slice(start, start + arr.shape[0])},
                       consolidated=False, zarr_format=3, storage_options=self._remote_options(),
                       write_empty_chunks=True)

    def commit(self, rows: pd.DataFrame) -> None:
        """Append the root rows (columns ``image`` + ROOT_VARS): from now on they count as stored."""
        n = self.committed() + len(rows)
        ds = xr.Dataset({k: ("image", _column(rows, k)) for k in ROOT_VARS},
                        coords={"image": _column(rows, "image")},
                        attrs=self.attrs)  # xarray rewrites the root attributes on append
        ds.to_zarr(self._target, append_dim="image", consolidated=False, zarr_format=3,
                   storage_options=self._remote_options())
        # the commit itself: one rewrite of the root's zarr.json
        self._attrs = {**self.attrs, COMMITTED: n}
        zarr.open_group(self._target, mode="r+", zarr_format=3,
                        storage_options=self._remote_options()).attrs.put(self._attrs)
        self._group = None  # its cached attributes are stale

    def drop_stale_maps(self) -> list[str]:
        """Delete ``maps/<method>`` groups computed before images were added; return their names."""
        g, n, dropped = self.group, self.committed(), []
        if "maps" not in g:
            return dropped
        for name, sub in list(g["maps"].groups()):
            if any(a.shape[0] != n for _, a in sub.arrays() if "image" in (a.metadata.dimension_names or ())):
                del g["maps"][name]
                dropped.append(f"maps/{name}")
        return dropped

    def set_pairs(self, pairs: dict[str, str]) -> None:
        """Rewrite the ``pair`` of stored images named in ``pairs`` (a later run may add partners)."""
        g = self.group
        n = self.committed()
        ids = _strings(g["image"][:n])
        cur = _strings(g["pair"][:n])
        new = np.array([pairs.get(i, p) for i, p in zip(ids, cur)], dtype=object)
        if n and list(new) != list(cur):
            g["pair"][:n] = new

    def _remote_options(self):
        return None if _is_local(self.url) else self.storage_options

    @property
    def _target(self):
        """What xarray writes to: one LocalStore object kept for local stores (re-opening the
        path on every call costs more than compressing a batch), else the URL."""
        if not _is_local(self.url):
            return self.url
        if self._local_store is None:
            self._local_store = zarr.storage.LocalStore(_local_path(self.url))
        return self._local_store


def as_strings(values) -> np.ndarray:
    """Any zarr/numpy string array (StringDType included) as an object array of str."""
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)


_strings = as_strings  # the name StoreWriter's body uses (StoreWriter is being rewritten on another branch)


def _column(rows: pd.DataFrame, k: str) -> np.ndarray:
    if k in _STR_VARS:
        return np.asarray(rows[k].astype(str).to_numpy(), dtype=object)
    return rows[k].to_numpy(dtype="int32")


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v
