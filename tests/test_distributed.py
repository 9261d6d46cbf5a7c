"""Extraction sharded over a dask.distributed LocalCluster gives the single-process store."""

import numpy as np
import pandas as pd
import pytest

import fakesegment_nb as fs
from fakesegment_nb.extract import extract

from support import FAST_LAYERS, FAST_MODEL


def test_localcluster_store_identical_to_single_process(tmp_path, pair_dirs, fast_store):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        store = tmp_path / "dist.zarr"
        res = extract(*pair_dirs, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=3,
                      scheduler=cluster.scheduler_address, progress=False)
        assert res.added == 8
        again = extract(*pair_dirs, store, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=3,
                        scheduler=cluster.scheduler_address, progress=False)
        assert again.added == 0 and again.already_stored == 8
    a, b = fs.open_store(fast_store), fs.open_store(store)
    assert a.attrs["layers"] == b.attrs["layers"] and a.attrs["weights"] == b.attrs["weights"]
    assert fs.image_table(a).equals(fs.image_table(b))
    for layer in fs.layer_names(a):
        np.testing.assert_array_equal(fs.feature_layer(a, layer).values, fs.feature_layer(b, layer).values)


def test_workers_leave_layers_with_shared_chunks_to_the_driver(tmp_path, pair_dirs):
    """Two workers' rows may fall in one chunk of a small layer: a worker must not write it."""
    from fakesegment_nb.distributed import _extract_batch
    from fakesegment_nb.writer import StoreWriter

    store = tmp_path / "s.zarr"
    extract(*pair_dirs, store, model="ssd300_vgg16", weights="random:0", progress=False)
    writer = StoreWriter(store)
    shared = writer.layers_sharing_chunks()
    assert shared == ["fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]
    start = writer.reserve(2)
    paths = [str(pair_dirs[0] / "coffee.png"), str(pair_dirs[1] / "coffee.png")]
    label, handed_back = _extract_batch(str(store), None, "ssd300_vgg16", "random:0", writer.attrs["layers"],
                                        "cpu", start, paths, shared)
    assert label == "random:0" and set(handed_back) == set(shared)
    ids = ["real/w0.png", "synthetic/w1.png"]  # commit the two rows, to read them back
    writer.commit(pd.DataFrame({"image": ids, "domain": ["real", "synthetic"], "path": paths, "pair": "",
                                "height": 128, "width": 128, "sha256": ["w0", "w1"]}))
    arrays = StoreWriter(store)._feature_arrays()
    assert arrays["conv4_3"][start:start + 2].shape[0] == 2
    assert np.isfinite(arrays["conv4_3"][start:start + 2]).all()  # written by the worker
    for name, feats in handed_back.items():  # not written: still the fill value
        assert feats.shape[0] == 2 and arrays[name][start:start + 2].shape[0] == 2
        assert np.isnan(arrays[name][start:start + 2]).all()


def test_localcluster_extracts_trained_lite0_as_one_process(tmp_path, pair_dirs):
    """The workers load the packaged ImageNet weights themselves (--weights auto resolves to
    imagenet on the driver) and write what a single process writes."""
    distributed = pytest.importorskip("distributed")
    from fakesegment_nb.distributed import worker_weights

    assert worker_weights("auto", "imagenet:efficientnet-lite0-57934424") == "imagenet"
    one = tmp_path / "one.zarr"
    extract(*pair_dirs, one, model="efficientnet_lite0", weights="auto", batch_size=3, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        dist = tmp_path / "dist.zarr"
        res = extract(*pair_dirs, dist, model="efficientnet_lite0", weights="auto", batch_size=3,
                      scheduler=cluster.scheduler_address, progress=False)
    assert res.added == 8 and res.weights == "imagenet:efficientnet-lite0-57934424"
    a, b = fs.open_store(one), fs.open_store(dist)
    assert b.attrs["weights_trained"] is True and fs.image_table(a).equals(fs.image_table(b))
    for layer in fs.layer_names(a):
        # a worker runs one torch thread, this process several: oneDNN's float32 sums differ in
        # order, which moves a few values by one float16 step (0.08% of them in one full run)
        want, got = (fs.feature_layer(t, layer).values.astype(np.float32) for t in (a, b))
        assert np.mean(want == got) > 0.99
        np.testing.assert_allclose(got, want, rtol=2 ** -8, atol=2 ** -8 * float(np.abs(want).max()))
