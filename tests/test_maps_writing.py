"""Writing a maps group a batch of images at a time (:func:`fakesegment_nb.maps.group.write_maps`):
the written maps equal the maps built in memory, the group is chunked by image, and plain
``xr.open_datatree`` never sees a group half written."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from fakesegment_nb.maps import compute_maps, fuse, group, read_maps, stored_methods, write_maps
from fakesegment_nb.maps.group import build_dataset
from fakesegment_nb.store import open_store

from support import copy_store, lite0_probe


def test_build_dataset_scores_every_batch_as_in_one_go(monkeypatch):
    # more images than a batch, not a multiple of it; scored rows out of order
    monkeypatch.setattr(group, "SCORE_BATCH", 5)
    tree = open_store(lite0_probe()[1], chunks=None)
    n = tree.sizes["image"]
    rng = np.random.default_rng(1)
    idx = rng.permutation(n)[: n - 3]
    maps = {"a": rng.normal(size=(idx.size, 5, 7)).astype(np.float32),
            "b": rng.normal(size=(idx.size, 10, 14)).astype(np.float32)}
    w = {"a": 1.0, "b": 0.5}
    thr = rng.normal(size=idx.size)
    ds = build_dataset(tree, "paired", idx, maps, w, (40, 56), thr, 0.05, "test", {}, n)
    whole = np.full((n, 40, 56), np.nan, np.float32)
    whole[idx] = fuse(maps, w, (40, 56))
    assert ds["score"].chunks[0] == (5, 5, 5, 1)
    np.testing.assert_array_equal(ds["score"].values, whole)
    full_thr = np.full(n, np.nan)
    full_thr[idx] = thr
    np.testing.assert_array_equal(ds["mask"].values, whole > full_thr[:, None, None])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(lite0 probe store, every method's maps built in memory, a copy with them written)."""
    _, src = lite0_probe()
    copy = copy_store(src, tmp_path_factory.mktemp("written"))
    in_memory = compute_maps(src, "all", write=False)
    compute_maps(copy, "all")
    return src, in_memory, copy


def test_written_maps_equal_the_maps_built_in_memory(stores):
    _, in_memory, copy = stores
    assert sorted(in_memory) == sorted(stored_methods(copy)) == ["domain", "paired", "reference"]
    for method, maps in in_memory.items():
        mem, disk = maps.dataset, read_maps(copy, method)
        assert set(mem.data_vars) == set(disk.data_vars)
        for v in mem.data_vars:
            a, b = mem[v].values, disk[v].values
            assert a.dtype == b.dtype, (method, v)
            np.testing.assert_array_equal(a, b, err_msg=f"{method} {v}")
        assert mem.attrs == disk.attrs


def test_written_maps_are_chunked_by_image(stores):
    _, in_memory, copy = stores
    for method, maps in in_memory.items():
        g = zarr.open_group(str(copy), path=f"maps/{method}", mode="r", zarr_format=3, use_consolidated=False)
        for v in ("score", "mask", *(k for k in maps.dataset.data_vars if str(k).startswith("layer_"))):
            assert g[v].chunks == (1, *g[v].shape[1:]), (method, v)
            assert g[v].shape[0] == maps.dataset.sizes["image"]


class _Interrupt(Exception):
    pass


def test_plain_xarray_never_sees_a_half_written_group(stores, tmp_path, monkeypatch):
    src, in_memory, _ = stores
    store = copy_store(src, tmp_path)  # holds complete paired maps
    n = open_store(store).sizes["image"]
    seen = []
    compute = group.dask.compute

    class Dask:
        """dask, whose compute first looks at the store as a plain reader does, after another
        writer has published a snapshot in the middle of the write."""
        calls = 0

        @staticmethod
        def compute(*args, **kwargs):
            Dask.calls += 1
            if Dask.calls == 2:
                group.consolidate(str(store))
                tree = xr.open_datatree(str(store), engine="zarr")
                seen.append(list(tree["maps"].children) if "maps" in tree.children else [])
                if Dask.interrupt:
                    raise _Interrupt
            return compute(*args, **kwargs)

    monkeypatch.setattr(group, "dask", Dask)
    monkeypatch.setattr(group, "SCORE_BATCH", 4)
    assert n > 4  # more than one batch: the write is seen half done
    Dask.interrupt = True
    with pytest.raises(_Interrupt):
        write_maps(str(store), in_memory["paired"])
    assert "paired" not in seen[-1]  # neither the old group (deleted) nor the new one (incomplete)
    tree = xr.open_datatree(str(store), engine="zarr")  # a run that died: still out of sight
    assert "paired" not in tree["maps"].children
    with pytest.warns(UserWarning, match="maps/paired covers 0 of"):
        assert "paired" not in stored_methods(store)
    Dask.calls, Dask.interrupt = 0, False
    write_maps(str(store), in_memory["paired"])
    assert "paired" not in seen[-1]
    tree = xr.open_datatree(str(store), engine="zarr")
    np.testing.assert_array_equal(tree["maps/paired/score"].values, in_memory["paired"].dataset["score"].values)
