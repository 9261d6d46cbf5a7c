"""The consolidated metadata of a store: the one snapshot every reader of the root sees.

Plain ``xr.open_datatree(path, engine="zarr")`` (and zarr's ``open_group``) read the root's
``zarr.json`` and, where it holds ``consolidated_metadata``, take every group's and array's
metadata -- shapes included -- from it and never look at the arrays' own ``zarr.json``. So the
snapshot, not the arrays' own metadata, is what such a reader sees; :func:`publish` writes it so
that it is always a consistent tree:

- every array with an ``image`` dimension is shown with exactly ``n`` images, the committed
  rows (the root attribute ``images_committed``): rows being written past them stay out of
  sight even where an array's own metadata already counts them;
- a group holding an array with fewer than ``n`` images (maps computed before images were
  added) is left out, with everything below it;
- the root's attributes and the snapshot are written together, in one write of the root's
  ``zarr.json`` (atomic on a local folder: zarr writes a temporary file and renames it; one
  object on an object store). A commit *is* that write.

Only the root's ``zarr.json`` is read from the store for the snapshot's data type: every other
node's metadata is copied as JSON, unparsed.
"""

from __future__ import annotations

import asyncio
import copy
import json

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

__all__ = ["publish", "read_nodes", "IMAGE_DIM"]

IMAGE_DIM = "image"
_META = "zarr.json"


async def _read_nodes(store: zarr.abc.store.Store) -> dict[str, dict]:
    """``{path: metadata JSON}`` of every group and array below the root (arrays' folders are
    never listed: a layer's chunk files may be many)."""
    proto = default_buffer_prototype()
    out: dict[str, dict] = {}

    async def read(path: str):
        buf = await store.get(f"{path}/{_META}", prototype=proto)
        return path, (None if buf is None else json.loads(buf.to_bytes()))

    async def walk(prefix: str):
        names = [n async for n in store.list_dir(prefix.rstrip("/") if prefix else "")]
        found = await asyncio.gather(*(read(f"{prefix}{n}") for n in names if n != _META and not n.endswith(".partial")))
        subgroups = []
        for path, meta in found:
            if meta is None:
                continue
            out[path] = meta
            if meta.get("node_type") == "group":
                subgroups.append(walk(f"{path}/"))
        await asyncio.gather(*subgroups)

    await walk("")
    return out


def read_nodes(store: zarr.abc.store.Store) -> dict[str, dict]:
    """The metadata of every group and array below the root, as stored (not the snapshot)."""
    return sync(_read_nodes(store))


def _cut(nodes: dict[str, dict], n: int) -> dict[str, dict]:
    """The nodes a reader may see at ``n`` committed images (see the module docstring)."""
    shown, stale = {}, []
    for path, meta in nodes.items():
        dims = meta.get("dimension_names") or ()
        if meta.get("node_type") != "array" or IMAGE_DIM not in dims:
            shown[path] = meta
            continue
        axis = list(dims).index(IMAGE_DIM)
        size = meta["shape"][axis]
        if size < n and "/" in path:  # derived data from before images were added
            stale.append(path.rsplit("/", 1)[0])
            continue
        if size != n:
            meta = copy.deepcopy(meta)
            meta["shape"][axis] = n
        shown[path] = meta
    return {p: m for p, m in shown.items()
            if not any(p == s or p.startswith(s + "/") for s in stale)}


def publish(store: zarr.abc.store.Store, attrs: dict, n: int | None = None) -> None:
    """Write the root's ``zarr.json``: ``attrs`` and, where the store can hold one, a snapshot of
    the tree at ``n`` committed images (default: ``attrs["images_committed"]``, else the
    shortest root array with an image dimension)."""
    root: dict = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}
    if store.supports_consolidated_metadata:
        nodes = read_nodes(store)
        if n is None:
            n = attrs.get("images_committed")
        if n is None:
            sizes = [m["shape"][0] for p, m in nodes.items()
                     if "/" not in p and m.get("node_type") == "array" and (m.get("dimension_names") or ())[:1] == [IMAGE_DIM]]
            n = min(sizes, default=0)
        shown = _cut(nodes, int(n))
        for meta in shown.values():
            if meta.get("node_type") == "group":
                meta["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": {}}
        root["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": shown}
    data = json.dumps(root, indent=2).encode()
    sync(store.set(_META, default_buffer_prototype().buffer.from_bytes(data)))
