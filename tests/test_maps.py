"""Maps in the store: schema, calibration, regions, attribution, and refusing bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from fakesegment_nb.errors import FakesegmentError
from fakesegment_nb.maps import calibrate, compute_maps, paired_maps, read_maps, robust_z, stored_methods
from fakesegment_nb.segments import REGION_COLUMNS, attribute, find_regions, region_mask
from fakesegment_nb.store import image_table, open_store

from support import copy_store, lite0_probe, small_probe, unpaired_store

FS = [sys.executable, "-m", "fakesegment_nb.cli"]


def test_schema_of_stored_maps():
    _, store = small_probe()
    tree = xr.open_datatree(store, engine="zarr", consolidated=False)  # as DESIGN.md promises
    table = image_table(store)
    size = tuple(tree.attrs["input_size"])
    assert set(stored_methods(store)) == {"paired", "reference", "domain"}
    for method in ("paired", "reference", "domain"):
        ds = tree["maps"][method]
        assert ds["score"].dims == ("image", "y", "x")
        assert ds["score"].shape == (len(table), *size)
        assert ds["mask"].dtype == bool and ds["mask"].shape == ds["score"].shape
        assert list(ds["image"].values) == list(tree["image"].values)  # inherited, same order
        assert json.loads(ds.attrs["layer_weights"])
    paired = tree["maps"]["paired"]
    syn = (table["domain"] == "synthetic").to_numpy()
    score = paired["score"].values
    assert np.isnan(score[~syn]).all() and np.isfinite(score[syn]).all()
    assert not paired["mask"].values[~syn].any()
    for unpaired in ("reference", "domain"):  # the unpaired methods score real images too (cross-fitted)
        assert np.isfinite(tree["maps"][unpaired]["score"].values).all()
    # the root is untouched: its attributes and image table still read
    assert tree.attrs["model"] == "ssd300_vgg16" and tree.attrs["weights"] == "random:0"
    assert open_store(store).sizes["image"] == len(table)


def test_layer_maps_sum_to_the_score():
    _, store = small_probe()
    ds = read_maps(store, "paired")
    from fakesegment_nb.maps import upsample

    i = int(np.flatnonzero(np.isfinite(ds["threshold"].values))[0])
    layers = [v for v in ds.data_vars if v.startswith("layer_")]
    total = sum(upsample(ds[v].values[i][None], ds["score"].shape[1:])[0] for v in layers)
    np.testing.assert_allclose(total, ds["score"].values[i], rtol=1e-4, atol=1e-5)


def test_reference_threshold_is_calibrated_on_real_images():
    _, store = small_probe()
    ds = read_maps(store, "reference")
    table = image_table(store)
    real = (table["domain"] == "real").to_numpy()
    flagged = ds["mask"].values[real].mean()
    assert abs(flagged - ds.attrs["fpr"]) < 0.005
    assert np.unique(ds["threshold"].values[real]).size == 1


def test_calibrate_and_robust_z():
    rng = np.random.default_rng(0)
    null = rng.normal(size=100_000)
    t = calibrate(null, 0.05)
    assert abs((null > t).mean() - 0.05) < 1e-3
    assert abs(t - 1.645) < 0.03
    with pytest.raises(FakesegmentError):
        calibrate(null, 0)
    with pytest.raises(FakesegmentError, match="no real image scores"):
        calibrate([np.nan], 0.05)
    maps = rng.normal(3.0, 2.0, size=(2, 200, 200))
    z = robust_z(maps)
    assert abs(np.median(z)) < 0.02 and abs(np.median(np.abs(z)) - 0.6745) < 0.02


def test_paired_mask_follows_per_image_thresholds():
    _, store = small_probe()
    ds = read_maps(store, "paired")
    params = json.loads(ds.attrs["params"])
    assert params["z_star"] > 0
    thr = ds["threshold"].values
    for i in np.flatnonzero(np.isfinite(thr)):
        np.testing.assert_array_equal(ds["mask"].values[i], ds["score"].values[i] > thr[i])


def test_fpr_moves_the_masks(tmp_path):
    _, store = small_probe()
    loose = paired_maps(store, fpr=0.2).dataset["mask"].values.mean()
    strict = paired_maps(store, fpr=0.01).dataset["mask"].values.mean()
    assert loose > strict


def test_regions_and_attribution():
    _, store = small_probe()
    regs = find_regions(store, "paired")
    assert list(regs.columns) == REGION_COLUMNS and len(regs) > 0
    assert regs["image"].str.startswith("synthetic/").all()
    ds = read_maps(store, "paired")
    r = regs.iloc[0]
    m = region_mask(store, r.image, region=int(r.region))
    assert m.sum() == r.area
    ys, xs = np.nonzero(m)
    assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == (r.y0, r.x0, r.y1, r.x1)
    mask = ds["mask"].sel(image=r.image).values
    assert mask[m].all()
    a = attribute(store, r.image, region=int(r.region), top=10_000)
    assert a.layers["contribution"].sum() == pytest.approx(a.score, rel=1e-3)
    assert a.layers["layer"].iloc[0] == r.layer
    # channel contributions add up to their layer's (up to the bilinear upsampling)
    per_layer = a.channels.groupby("layer")["contribution"].sum()
    for _, row in a.layers.iterrows():
        assert per_layer[row.layer] == pytest.approx(row.contribution, rel=0.15)
    # a box works too, and the reference method attributes exactly
    b = attribute(store, r.image, box=(int(r.y0), int(r.x0), int(r.y1), int(r.x1)), method="reference",
                  top=10_000)
    per_layer = b.channels.groupby("layer")["contribution"].sum()
    for _, row in b.layers.iterrows():
        assert per_layer[row.layer] == pytest.approx(row.contribution, rel=0.05)
    with pytest.raises(FakesegmentError, match="not inside"):
        attribute(store, r.image, box=(0, 0, 10_000, 10))
    with pytest.raises(FakesegmentError, match="no region"):
        attribute(store, r.image, region=999)


def test_store_without_pairs_asked_for_paired():
    store = unpaired_store()
    with pytest.raises(FakesegmentError, match="reference"):
        paired_maps(store)
    proc = subprocess.run([*FS, "maps", "--store", str(store), "--method", "paired"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--method reference" in proc.stderr


def test_all_on_a_store_without_pairs_writes_reference_and_domain(tmp_path):
    store = copy_store(unpaired_store(), tmp_path)
    res = compute_maps(store, "all")
    assert list(res) == ["reference", "domain"] and any("paired maps skipped" in n for n in res["domain"].notes)
    assert sorted(stored_methods(store)) == ["domain", "reference"]
    with pytest.raises(FakesegmentError, match="no paired maps"):
        read_maps(store, "paired")


def test_cli_maps(tmp_path):
    probe, store = small_probe()
    store = copy_store(store, tmp_path)
    proc = subprocess.run([*FS, "maps", "--store", str(store), "--method", "reference", "--fpr", "0.1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "maps/reference" in proc.stdout
    assert read_maps(store, "reference").attrs["fpr"] == 0.1


# --------------------------------------------------------------------------------------------
# efficientnet_lite0 (trained): per-model choices and the memory bank


def test_lite0_maps_record_their_choices():
    from fakesegment_nb.maps import LAYER_WEIGHTS, PAIRED_COMPONENTS_BY_MODEL

    _, store = lite0_probe()
    tree = open_store(store)
    assert tree.attrs["weights_trained"] and tree.attrs["model"] == "efficientnet_lite0"
    paired = read_maps(store, "paired")
    assert json.loads(paired.attrs["layer_weights"]) == {
        l: LAYER_WEIGHTS["paired"]["efficientnet_lite0"].get(l, 0.0) for l in ("p2", "p3", "p4", "p5")}
    assert json.loads(paired.attrs["params"])["components"] == PAIRED_COMPONENTS_BY_MODEL["efficientnet_lite0"]
    ref = read_maps(store, "reference")
    params = json.loads(ref.attrs["params"])
    assert params["distance"] == "memory_bank" and params["centre"] is True
    assert params["bank"]["grid"] == "p3" and params["bank"]["pool"] == 3
    assert params["slices"] == {"p3": [0, 40], "p4": [40, 152]}
    # the fitted banks are kept (for attribution), one per fold, as big as params says
    assert ref["bank"].shape[0] == 2 and ref["bank"].shape[2] == 152
    for k, n in enumerate(params["bank_sizes"]):
        assert np.isfinite(ref["bank"].values[k, :n]).all() and np.isnan(ref["bank"].values[k, n:]).all()


def test_lite0_reference_threshold_is_calibrated_on_real_images():
    _, store = lite0_probe()
    ds = read_maps(store, "reference")
    real = (image_table(store)["domain"] == "real").to_numpy()
    assert abs(ds["mask"].values[real].mean() - ds.attrs["fpr"]) < 0.005
    # real images are scored by the other fold's bank: a bank holding every patch of an image
    # would give it distance 0 everywhere
    assert (np.nanmax(ds["score"].values[real], axis=(1, 2)) > 0).all()
    assert (np.median(ds["score"].values[real], axis=(1, 2)) > 0.1).all()


def test_cross_fitting_never_scores_an_image_against_its_twin():
    from fakesegment_nb.maps import fold_models

    _, store = lite0_probe()
    table = image_table(store)
    fold, model_of = fold_models(table, tree=open_store(store, chunks=None))
    assert np.array_equal(read_maps(store, "reference")["reference_fold"].values, model_of)
    pos = {k: i for i, k in enumerate(table.index)}
    real = np.flatnonzero(fold >= 0)
    assert set(fold[real]) == {0, 1} and (model_of[real] != fold[real]).all()
    syn = np.flatnonzero(table["domain"].to_numpy() == "synthetic")
    assert syn.size and all(model_of[i] != fold[pos[table["pair"].iloc[i]]] for i in syn)


def test_similar_real_images_fall_in_different_folds():
    from fakesegment_nb.maps import similar_pairs

    # two views each of subjects a, b, c in id order a b a b c c, and one odd image d: alternating
    # in id order would put both views of a (and of b) in fold 0 (fold 1) -- each judged against a
    # half that never saw its subject
    rng = np.random.default_rng(0)
    centres = {s: rng.normal(size=8) * 10 for s in "abcd"}
    names = list("ababccd")
    x = np.stack([centres[s] + rng.normal(size=8) * 0.1 for s in names])
    fold = similar_pairs(x)
    assert set(fold) == {0, 1} and abs(int((fold == 0).sum()) - int((fold == 1).sum())) <= 1
    for s in "abc":
        i, j = [k for k, n in enumerate(names) if n == s]
        assert fold[i] != fold[j], s
    assert np.array_equal(fold, similar_pairs(x))  # deterministic
    assert np.array_equal(similar_pairs(x[:1]), [0]) and similar_pairs(x[:0]).size == 0


def test_mutually_most_similar_real_images_of_a_store_are_split():
    from fakesegment_nb.maps import content_descriptors, folds

    _, store = lite0_probe()
    tree = open_store(store, chunks=None)
    table = image_table(tree)
    real = np.flatnonzero(table["domain"].to_numpy() == "real")
    x = content_descriptors(tree, real)
    d = ((x[:, None] - x[None]) ** 2).sum(-1) + np.diag(np.full(real.size, np.inf))
    nearest = d.argmin(1)
    fold = folds(table, real, tree)[real]
    mutual = [(i, int(j)) for i, j in enumerate(nearest) if nearest[j] == i and i < j]
    assert mutual and all(fold[i] != fold[j] for i, j in mutual)


def test_memory_bank_stays_bounded_as_real_images_grow():
    from fakesegment_nb.maps import fit_memory_bank

    _, store = lite0_probe()
    tree = open_store(store, chunks=None)
    real = np.flatnonzero(image_table(tree)["domain"].to_numpy() == "real")
    w = {"p3": 1.0, "p4": 1.0}
    sizes = []
    for n in (2, 4, 8):
        mb = fit_memory_bank(tree, ["p3", "p4"], real[:n], w, (40, 40), max_size=300, max_candidates=2000)
        assert mb.patches_seen == n * 1600
        assert mb.candidates <= 2000 and mb.bank.shape == (min(300, int(np.ceil(0.1 * n * 1600))), 152)
        sizes.append(mb.nbytes())
    assert sizes[1] == sizes[2]  # capped: 8 images cost what 4 do
    with pytest.raises(FakesegmentError, match="bank ratio"):
        from fakesegment_nb.maps import reference_maps

        reference_maps(store, bank={"ratio": 0})
    with pytest.raises(FakesegmentError, match="unknown memory-bank setting"):
        reference_maps(store, bank={"size": 10})


def test_greedy_coreset_is_deterministic_and_covers():
    import torch

    from fakesegment_nb.maps import greedy_coreset

    # one big cloud and ten small clusters far from it and from each other: a random subset of
    # 100 rows misses some clusters, a coreset must not
    rng = np.random.default_rng(0)
    far = rng.normal(scale=20.0, size=(10, 200))
    x = np.concatenate([rng.normal(size=(2900, 200)), (far[:, None] + rng.normal(size=(10, 10, 200))).reshape(100, 200)])
    x = torch.from_numpy(x.astype(np.float32))
    a = greedy_coreset(x, 100, seed=1)
    assert np.array_equal(a, greedy_coreset(x, 100, seed=1))
    assert not np.array_equal(a, greedy_coreset(x, 100, seed=2))
    assert np.unique(a).size == 100
    np.testing.assert_array_equal(greedy_coreset(x, 5000), np.arange(3000))

    def radius(idx):  # largest distance from a row to its nearest chosen row
        return float(torch.cdist(x, x[torch.from_numpy(np.asarray(idx))]).min(1).values.max())

    rnd = np.random.default_rng(0).choice(3000, 100, replace=False)
    assert radius(a) < 0.5 * radius(rnd)


def test_lite0_reference_attribution_adds_up():
    _, store = lite0_probe()
    regs = find_regions(store, "reference")
    assert len(regs) > 0
    r = regs.iloc[0]
    a = attribute(store, r.image, region=int(r.region), method="reference", top=10_000)
    assert a.layers["contribution"].sum() == pytest.approx(a.score, rel=1e-3)
    per_layer = a.channels.groupby("layer")["contribution"].sum()
    for _, row in a.layers.iterrows():
        assert per_layer[row.layer] == pytest.approx(row.contribution, rel=0.15)
    assert (a.channels["contribution"] >= 0).all()  # squared differences
