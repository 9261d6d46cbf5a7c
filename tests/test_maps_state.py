"""The fitted state of the maps (per-channel spread, Gaussians, memory banks) kept in the maps
group and reused by :func:`fakesegment_nb.segments.attribute`, and stores written without it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fakesegment_nb.maps import Maps, paired_maps, read_maps, write_maps
from fakesegment_nb.segments import attribute, find_regions
from fakesegment_nb.store import image_table, open_store

from support import copy_store, lite0_probe, small_probe

CAP = 4  # real images the spread is estimated from in these tests (the probe has 8)


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """(lite0 probe store, a copy whose paired maps estimated the spread from CAP real images)."""
    from fakesegment_nb.maps import features

    _, src = lite0_probe()
    store = copy_store(src, tmp_path_factory.mktemp("capped"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(features, "MAX_REAL_FOR_SPREAD", CAP)
        write_maps(store, paired_maps(store))
    return src, store


def _whole_image(store):
    h, w = (int(v) for v in open_store(store).attrs["input_size"])
    return (0, 0, h, w)


def _scored_synthetic(ds) -> str:
    thr = ds["threshold"].values
    return str(ds["image"].values[int(np.flatnonzero(np.isfinite(thr))[0])])


def _without_state(store, method):
    """Rewrite the stored maps of ``method`` as maps written before the fitted state was kept."""
    ds = read_maps(store, method).load()
    state = [v for v in ds.data_vars if str(v).startswith(("spread_", "mean_", "precision_"))]
    assert state, "the maps hold no fitted state to remove"
    ds = ds.drop_vars(state)
    for v in ds.variables.values():
        v.encoding = {}
    write_maps(store, Maps(method, ds))


def test_attribute_uses_the_spread_the_paired_maps_used(capped):
    # more real images than the spread is estimated from (256 by default; here CAP of the
    # probe's 8): the maps draw one random sample of real images per layer from one generator,
    # and attribution must divide by the very same spread
    src, store = capped
    ds = read_maps(store, "paired")
    # the cap took effect: the spread, and so the maps, differ from those of all 8 real images
    assert not np.allclose(ds["score"].values, read_maps(src, "paired")["score"].values, equal_nan=True)
    for layer in ("p2", "p3", "p4"):
        assert ds[f"spread_{layer}"].dims == (f"channel_{layer}",)
        assert ds[f"spread_{layer}"].shape == open_store(store)["layers"][layer]["features"].shape[1:2]
    image = _scored_synthetic(ds)
    pos = [str(v) for v in ds["image"].values].index(image)
    # with the whole image as the region every cell weighs the same, so each layer's channel
    # contributions must add up to the mean of its stored weighted layer map (no upsampling)
    a = attribute(store, image, box=_whole_image(store), top=10_000)
    per_layer = a.channels.groupby("layer")["contribution"].sum()
    assert set(per_layer.index) == {"p2", "p3", "p4"}
    for layer, got in per_layer.items():
        want = float(np.mean(ds[f"layer_{layer}"].values[pos], dtype=np.float64))
        assert got == pytest.approx(want, rel=1e-4), layer


def test_paired_maps_written_without_their_spread_still_attribute(capped, tmp_path, monkeypatch):
    from fakesegment_nb.maps import features

    _, store = capped
    image = _scored_synthetic(read_maps(store, "paired"))
    box = _whole_image(store)
    with_state = attribute(store, image, box=box, top=10_000)
    old = copy_store(store, tmp_path)
    _without_state(old, "paired")
    assert not [v for v in read_maps(old, "paired").data_vars if v.startswith("spread_")]
    # the spread is refitted as the maps fitted it: same real images, drawn in the same order
    monkeypatch.setattr(features, "MAX_REAL_FOR_SPREAD", CAP)
    refitted = attribute(old, image, box=box, top=10_000)
    pd.testing.assert_frame_equal(refitted.channels, with_state.channels)
    assert refitted.score == with_state.score


def test_reference_gaussians_are_stored_and_reused(tmp_path):
    _, src = small_probe()
    ds = read_maps(src, "reference")
    tree = open_store(src)
    for layer in ds.attrs["layers"]:
        c = tree["layers"][layer]["features"].shape[1]
        assert ds[f"mean_{layer}"].shape == (2, c) and ds[f"precision_{layer}"].shape == (2, c, c)
        p = ds[f"precision_{layer}"].values
        np.testing.assert_allclose(p, np.swapaxes(p, 1, 2), rtol=1e-6, atol=1e-9)  # symmetric
    r = find_regions(src, "reference").iloc[0]
    box = (int(r.y0), int(r.x0), int(r.y1), int(r.x1))
    with_state = attribute(src, r.image, box=box, method="reference", top=10_000)
    old = copy_store(src, tmp_path)
    _without_state(old, "reference")
    refitted = attribute(old, r.image, box=box, method="reference", top=10_000)
    # the same contributions; rows compared by (layer, channel), since a refit in another thread
    # count may round differently and swap two near-equal channels in the ranking
    key = ["layer", "channel"]
    pd.testing.assert_frame_equal(refitted.channels.sort_values(key).reset_index(drop=True),
                                  with_state.channels.sort_values(key).reset_index(drop=True), rtol=1e-6)
    pd.testing.assert_frame_equal(refitted.layers, with_state.layers, rtol=1e-6)


def test_paired_terms_add_up_to_the_layer_components():
    from fakesegment_nb.maps.paired import paired_terms

    rng = np.random.default_rng(0)
    zs = rng.normal(size=(3, 6, 9, 9)).astype(np.float32)
    zr = zs + 0.3 * rng.normal(size=zs.shape).astype(np.float32)
    zs[:, 2] = zr[:, 2] = 0.0  # a dead channel: no range, left out of the SSIM mean
    zs[1] = zr[1] = 0.0  # an image with no live channel at all
    terms = paired_terms(zs, zr)
    means, shares = terms.channel_means(), terms.channel_terms()
    assert terms.ssim_valid[0].tolist() == [True, True, False, True, True, True]
    for k in ("sq", "ssim"):
        t, n = shares[k]
        np.testing.assert_allclose((t / n[:, None, None, None]).sum(axis=1), means[k], rtol=1e-5, atol=1e-6)
    t, n = shares["ssim"]
    assert (t[0, 2] == 0).all() and (t[1] == 0).all() and n.tolist() == [5, 1, 5]
    assert (means["ssim"][1] == 0).all()
    # the SSIM component is 1 - local_ssim, the function the maps were tuned with
    import torch

    from fakesegment_nb.ssim import local_ssim
    from fakesegment_nb.maps import SSIM_SIGMA

    want = 1.0 - torch.nan_to_num(local_ssim(torch.from_numpy(zs), torch.from_numpy(zr), sigma=SSIM_SIGMA),
                                  nan=1.0).numpy()
    np.testing.assert_array_equal(means["ssim"], want)


def test_reference_with_the_sets_own_bank_attributes_exactly(tmp_path):
    # the probe's set is incoherent (renders of unrelated photos: its own bank weighs 0), so force
    # the exponent to exercise the geometric mean R^(1-a) S^a and its split by channel
    from fakesegment_nb.maps import as_tree, reference_maps
    from fakesegment_nb.maps.reference import fold_models
    from fakesegment_nb.maps.set_novelty import set_bank_folds

    _, src = lite0_probe()
    auto = read_maps(src, "reference")
    sets = json.loads(auto.attrs["params"])["sets"]
    assert [s["set"] for s in sets] == ["synthetic"] and 0 <= sets[0]["weight"] <= 1 and sets[0]["coherence"] > 0
    store = copy_store(src, tmp_path)
    write_maps(store, reference_maps(store, bank={"set_weight": 0.5}))
    ds = read_maps(store, "reference")
    assert float(ds["set_weight"].values[0]) == 0.5 and ds["set_bank"].shape[:2] == (1, 2)
    table = image_table(store)
    syn = np.flatnonzero(table["domain"].to_numpy() == "synthetic")
    real = np.flatnonzero(table["domain"].to_numpy() == "real")
    # real images keep R: their scores (and so the threshold) are those of the automatic maps
    np.testing.assert_array_equal(ds["score"].values[real], auto["score"].values[real])
    assert not np.allclose(ds["score"].values[syn], auto["score"].values[syn])
    # cross-fitted: no synthetic image is in the set bank that scores it
    model_of = ds["reference_fold"].values
    assert np.array_equal(model_of, fold_models(table, tree=as_tree(store))[1])
    for k, members in set_bank_folds(model_of, syn).items():
        assert not (model_of[members] == k).any()
    # the set's reference is every patch of the set's *other* images: an image's own patches never
    # count (they would make its distance 0), and the distance is the brute-force nearest over the others
    from fakesegment_nb.maps.memory_bank import bank_patches
    from fakesegment_nb.maps.set_novelty import set_distances

    params = json.loads(ds.attrs["params"])
    bp = {**params["bank"], "seed": 0, "centre": True}
    k = int(model_of[syn[0]])
    scale = np.asarray(ds["bank_scale"].values[k], np.float32)
    w = {"p3": 1.0, "p4": 1.0}
    out = {l: np.zeros((1, 20, 20), np.float32) for l in w}
    tree = as_tree(store)
    set_distances(tree, list(w), np.array([0]), syn[:1], syn, scale, params["slices"], (20, 20), bp, w, out)
    got = (out["p3"] + out["p4"]) / 2
    patches = bank_patches(tree, list(w), syn, torch.from_numpy(scale), (20, 20), 3, True).numpy()
    patches = patches.transpose(0, 2, 3, 1).reshape(syn.size, 400, -1).astype(np.float64)
    d = ((patches[0][:, None, :] - patches[1:].reshape(-1, patches.shape[2])[None]) ** 2).sum(2).min(1)
    np.testing.assert_allclose(got.ravel(), d, rtol=1e-3, atol=1e-5)
    assert (got > 0).all()
    image = str(table.index[syn[0]])
    a = attribute(store, image, box=_whole_image(store), method="reference", top=10_000)
    per_layer = a.channels.groupby("layer")["contribution"].sum()
    for layer in ("p3", "p4"):
        want = float(np.mean(ds[f"layer_{layer}"].values[syn[0]], dtype=np.float64))
        assert per_layer[layer] == pytest.approx(want, rel=1e-4), layer
    # the set's own location step: each synthetic image divided by (the median of the set's *other*
    # images at each location over the set's median)^a, computed from the maps without the step
    plain = reference_maps(store, bank={"set_weight": 0.5, "set_location": False}).dataset
    joint = np.mean([plain[f"layer_{l}"].values[syn] for l in ("p3", "p4")], axis=0)
    div = ds["set_location_scale"].values
    assert np.isnan(div[real]).all() and np.isfinite(div[syn]).all()
    for i in (0, len(syn) // 2, len(syn) - 1):
        others = np.delete(joint, i, axis=0)
        want = (np.median(others, axis=0) / np.median(joint)) ** 0.5
        np.testing.assert_allclose(div[syn[i]], want, rtol=1e-4)
        for layer in ("p3", "p4"):
            np.testing.assert_allclose(ds[f"layer_{layer}"].values[syn[i]],
                                       plain[f"layer_{layer}"].values[syn[i]] / want, rtol=1e-3, atol=1e-6)


def test_a_set_barely_closer_to_itself_than_to_the_photos_gets_no_set_reference():
    from fakesegment_nb.maps.set_novelty import MIN_SET_WEIGHT, set_exponent

    assert set_exponent(0.5) == 0.5 and set_exponent(0.88) == pytest.approx(0.12)
    assert set_exponent(1 - MIN_SET_WEIGHT) == pytest.approx(MIN_SET_WEIGHT)
    assert set_exponent(0.989) == 0.0  # the probe's renders of unrelated photos: not worth the search
    assert set_exponent(1.3) == 0.0 and set_exponent(-0.5) == 1.0 and set_exponent(float("nan")) == 0.0


def test_unpaired_synthetic_images_alternate_between_the_folds_per_set():
    from fakesegment_nb.maps.reference import fold_models

    table = pd.DataFrame({"domain": ["real"] * 4 + ["synthetic"] * 6, "pair": [""] * 10,
                          "set": [""] * 4 + ["a", "a", "a", "b", "b", "a"]},
                         index=[f"img{i}" for i in range(10)])
    for seed in range(5):
        _, model_of = fold_models(table, seed)
        for s, n in (("a", 4), ("b", 2)):
            m = model_of[(table["set"] == s).to_numpy()]
            assert sorted(np.bincount(m, minlength=2)) == [n // 2, n - n // 2]


def test_a_large_set_is_compared_with_a_fixed_sample_of_its_other_images():
    from fakesegment_nb.maps.set_novelty import others, set_reference

    members = np.arange(100, 200)
    assert np.array_equal(set_reference(members[:10], 32, 0), members[:10])  # small sets: all of them
    ref = set_reference(members, 32, 0)
    assert ref.size == 33 and np.isin(ref, members).all() and np.unique(ref).size == 33
    assert np.array_equal(ref, set_reference(members, 32, 0)) and not np.array_equal(ref, set_reference(members, 32, 1))
    inside, outside = int(ref[5]), int(np.setdiff1d(members, ref)[0])
    assert inside not in ref[others(ref, inside, 32)] and others(ref, inside, 32).size == 32
    assert others(ref, outside, 32).size == 32
