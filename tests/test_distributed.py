"""Extraction sharded over a dask.distributed LocalCluster gives the single-process store."""

import numpy as np
import pytest

import fakesegment_nb as fs
from fakesegment_nb.extract import extract

from conftest import FAST_LAYERS, FAST_MODEL


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
