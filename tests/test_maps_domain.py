"""The ``domain`` map: a cross-fitted linear patch classifier, real against each synthetic set --
its folds, its stored state, its exact attribution, and refusing too few images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fakesegment_nb.errors import FakesegmentError
from fakesegment_nb.maps import Maps, compute_maps, domain_maps, read_maps, stored_methods, write_maps
from fakesegment_nb.segments import attribute
from fakesegment_nb.store import image_table, open_store

from support import build_store, copy_store, lite0_probe, unpaired_store

FS = [sys.executable, "-m", "fakesegment_nb.cli"]


def _whole_image(store):
    h, w = (int(v) for v in open_store(store).attrs["input_size"])
    return (0, 0, h, w)


def test_domain_maps_record_their_classifier_and_folds():
    _, store = lite0_probe()
    ds = read_maps(store, "domain")
    table = image_table(store)
    params = json.loads(ds.attrs["params"])
    assert ds.attrs["layers"] == ["p2", "p3"] and params["grid"] == "p3"
    # per layer its channels' neighbourhood means, then their spreads (p2: 24 channels, p3: 40)
    assert params["spread"] is True
    assert params["slices"] == {"p2": [0, 48], "p3": [48, 128]} and params["sets"] == ["synthetic"]
    folds = params["folds"][0]
    assert ds["domain_coef"].shape == (1, folds, 128) and ds["domain_centre"].shape == (1, folds, 128)
    fold = ds["domain_fold"].values[0]
    assert (fold >= 0).all() and set(fold) == set(range(folds))  # every image scored, every fold used
    pos = {k: i for i, k in enumerate(table.index)}
    for img, pair in table["pair"].items():  # a pair stays in one fold
        if pair:
            assert fold[pos[img]] == fold[pos[pair]]
    real = (table["domain"] == "real").to_numpy()
    # the mask threshold is calibrated on the real images' out-of-fold scores
    assert abs(ds["mask"].values[real].mean() - ds.attrs["fpr"]) < 0.005
    assert np.isfinite(ds["score"].values).all()
    # out of fold, the renders look more rendered than the photos (the probe's renders are blurred,
    # grain-free and drifted all over)
    score = ds["score"].values.mean(axis=(1, 2))
    assert score[~real].mean() > score[real].mean() + 1.0


def test_no_image_is_scored_by_a_classifier_that_saw_it():
    # change one image's features: the classifier of its own fold must stay bit-identical (it never
    # saw the image), the other folds' classifiers must change (they did see it), and so must the
    # image's own score; every other image of its fold keeps its score exactly
    _, store = lite0_probe()
    tree = open_store(store, chunks=None).load()
    before = domain_maps(tree).dataset
    table = image_table(tree)
    fold = before["domain_fold"].values[0]
    x = int(np.flatnonzero(table["domain"].to_numpy() == "synthetic")[0])
    for layer in ("p2", "p3"):
        tree["layers"][layer]["features"].values[x] *= 3
    after = domain_maps(tree).dataset
    coef_b, coef_a = before["domain_coef"].values[0], after["domain_coef"].values[0]
    for k in range(coef_b.shape[0]):
        assert np.array_equal(coef_b[k], coef_a[k]) == (k == fold[x]), k
    same = np.flatnonzero((fold == fold[x]) & (np.arange(fold.size) != x))
    assert same.size and np.array_equal(before["score"].values[same], after["score"].values[same])
    assert not np.allclose(before["score"].values[x], after["score"].values[x])


@pytest.mark.parametrize("spread", [True, False])
def test_domain_attribution_is_exact_and_uses_the_stored_classifier(tmp_path, spread):
    _, probe_store = lite0_probe()
    if spread:  # the default
        src = probe_store
    else:  # means only (as maps written before the spreads were features)
        src = copy_store(probe_store, tmp_path / "means")
        write_maps(src, domain_maps(src, domain={"spread": False}))
        assert json.loads(read_maps(src, "domain").attrs["params"])["slices"] == {"p2": [0, 24], "p3": [24, 64]}
    ds = read_maps(src, "domain")
    image = str(ds["image"].values[int(np.flatnonzero(image_table(src)["domain"] == "synthetic")[0])])
    pos = [str(v) for v in ds["image"].values].index(image)
    a = attribute(src, image, box=_whole_image(src), method="domain", top=10_000)
    # a linear model: every layer's channel terms add up to its stored layer map (same cells), and
    # the layers to the score (up to the bilinear upsampling)
    per_layer = a.channels.groupby("layer")["contribution"].sum()
    # one row per channel: a channel's mean and spread terms are summed
    assert a.channels.groupby("layer").size().to_dict() == {"p2": 24, "p3": 40}
    for layer in ("p2", "p3"):
        want = float(np.mean(ds[f"layer_{layer}"].values[pos], dtype=np.float64))
        assert per_layer[layer] == pytest.approx(want, rel=1e-4, abs=1e-5), layer
    assert a.layers["contribution"].sum() == pytest.approx(a.score, rel=1e-3)
    assert (a.channels["contribution"] < 0).any()  # channels may pull towards "real"
    # the stored classifier is what attribution reads: doubling it doubles every contribution
    store = copy_store(src, tmp_path)
    doubled = read_maps(store, "domain").load()
    doubled["domain_coef"] = doubled["domain_coef"] * 2
    for v in doubled.variables.values():
        v.encoding = {}
    write_maps(store, Maps("domain", doubled))
    b = attribute(store, image, box=_whole_image(store), method="domain", top=10_000)
    key = ["layer", "channel"]
    np.testing.assert_allclose(b.channels.sort_values(key)["contribution"].to_numpy(),
                               2 * a.channels.sort_values(key)["contribution"].to_numpy(), rtol=1e-5)


def _handmade(path, domains):
    rng = np.random.default_rng(0)
    feats = {"l1": rng.normal(size=(len(domains), 4, 8, 8)).astype(np.float32)}
    return build_store(path, feats, domains)


def test_too_few_images_say_how_many_the_domain_map_needs(tmp_path, monkeypatch):
    store = _handmade(tmp_path / "few.zarr", ["real", "real", "synthetic", "synthetic", "synthetic"])
    with pytest.raises(FakesegmentError, match=r"needs at least 3 real and 3 synthetic images per set.*has 2 real"):
        domain_maps(store)
    proc = subprocess.run([*FS, "maps", "--store", str(store), "--method", "domain"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "at least 3 real" in proc.stderr
    only_real = _handmade(tmp_path / "real.zarr", ["real"] * 4)
    proc = subprocess.run([*FS, "maps", "--store", str(only_real), "--method", "domain"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "no synthetic images (only 4 real)" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    # refusing loses nothing stored: the reference maps written before are still there, unchanged
    store = copy_store(unpaired_store(), tmp_path)
    compute_maps(store, "reference")
    ref = read_maps(store, "reference")["score"].values
    from fakesegment_nb.maps import settings

    monkeypatch.setattr(settings, "MIN_DOMAIN_IMAGES", 4)
    from fakesegment_nb.maps import domain

    monkeypatch.setattr(domain, "MIN_DOMAIN_IMAGES", 4)
    with pytest.raises(FakesegmentError, match="at least 4 real and 4 synthetic"):
        compute_maps(store, "domain")
    res = compute_maps(store, "all")  # "all" skips it with the same note
    assert "domain" not in res and any("domain maps skipped" in n for n in res["reference"].notes)
    assert stored_methods(store) == ["reference"]
    np.testing.assert_array_equal(read_maps(store, "reference")["score"].values, ref)


def test_relabelling_stops_learning_a_pasted_photo_as_synthetic():
    # image-level labels: a synthetic image's pasted photo (30% of its patches, from photos a little
    # unlike the real set: feature 1) is labelled "synthetic" with its render (feature 0). The refit
    # without the patches the first fit finds real-looking ranks render above pasted photo better,
    # and the pasted photo closer to the real patches.
    from sklearn.metrics import roc_auc_score

    from fakesegment_nb.maps.domain import _train

    rng = np.random.default_rng(0)
    real = rng.normal(size=(3000, 2))
    render = rng.normal(size=(2100, 2)) + [3.0, 0.0]
    pasted = rng.normal(size=(900, 2)) + [0.0, 1.5]
    x = np.r_[real, render, pasted].astype(np.float32)
    y = np.r_[np.zeros(3000, int), np.ones(3000, int)]
    auc = {}
    for relabel in (None, 0.9):
        coef, centre = _train(x, y, 0.01, 0, relabel)
        np.testing.assert_allclose(centre, real.mean(0), atol=1e-5)  # the real patches are all kept

        def score(a):
            return (a - centre) @ coef
        auc[relabel] = (roc_auc_score(np.r_[np.ones(2100), np.zeros(900)], np.r_[score(render), score(pasted)]),
                        roc_auc_score(np.r_[np.zeros(3000), np.ones(900)], np.r_[score(real), score(pasted)]))
    assert auc[0.9][0] > auc[None][0] + 0.03
    assert auc[0.9][1] < auc[None][1] - 0.02


def test_a_relabel_outside_zero_to_one_is_refused():
    from fakesegment_nb.errors import ParameterError

    with pytest.raises(ParameterError, match="relabel must be None or a quantile"):
        domain_maps(unpaired_store(), domain={"relabel": 1.5})
