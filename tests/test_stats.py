"""Domain statistics against direct numpy/scipy/skimage computations, ranking, edge cases, CLI."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from skimage.metrics import structural_similarity

import fakesegment_nb as fs
from fakesegment_nb.cli import main
from fakesegment_nb.errors import FakesegmentError, ParameterError
from fakesegment_nb.metrics import cohens_d, fid, kid
from fakesegment_nb.stats import (CHANNEL_COLUMNS, IMAGE_COLUMNS, LAYER_COLUMNS, PAIR_COLUMNS, TABLES, cached_stats,
                                  compute_stats)
from fakesegment_nb.writer import StoreWriter

from support import (FAST_LAYERS, FAST_MODEL, STATS_LAYERS as LAYERS, SEVERITIES, build_store, copy_store,
                     extracted_store, severity_store, two_set_stores)


# ---------------------------------------------------------------------------------------------
# direct references, written independently of fakesegment_nb.metrics


def direct_fid(x, y):
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # tr((cx cy)^1/2) through the symmetric route: eigenvalues of cx^1/2 cy cx^1/2
    w, v = np.linalg.eigh(cx)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(root @ cy @ root)
    return ((mx - my) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2 * np.sqrt(np.clip(lam, 0, None)).sum()


def direct_kid(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def stored(store, layer):
    tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    root = tree.to_dataset(inherit=False)
    f = tree[f"layers/{layer}/features"].values.astype(np.float64)
    strings = lambda v: np.array([str(x) for x in np.asarray(root[v].values).tolist()])  # noqa: E731
    return f, strings("domain"), strings("pair"), strings("image")


# ---------------------------------------------------------------------------------------------
# reference computations on a store of real photos


@pytest.fixture(scope="module")
def tables():
    return {s: compute_stats(severity_store(s)) for s in SEVERITIES}


def test_fid_kid_patch_fd_match_direct_computation(tables):
    store = severity_store(2)
    lt = tables[2].layers.set_index("layer")
    assert list(lt.index) == LAYERS
    for layer in LAYERS:
        f, dom, _, _ = stored(store, layer)
        vec = f.mean(axis=(2, 3))
        x, y = vec[dom == "real"], vec[dom == "synthetic"]
        # the contract's route, literally: eigenvalues of the product (reproduced to rounding)
        cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
        literal = (((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(cx) + np.trace(cy)
                   - 2 * np.sqrt(np.clip(np.linalg.eigvals(cx @ cy).real, 0, None)).sum())
        assert lt.loc[layer, "fid"] == pytest.approx(literal, rel=1e-9, abs=1e-9)
        # and an independent symmetric route; with 6 images < channels the near-zero
        # eigenvalues of the product add noise of order 1e-6 to the literal one
        assert lt.loc[layer, "fid"] == pytest.approx(direct_fid(x, y), rel=1e-5, abs=1e-8)
        assert lt.loc[layer, "kid"] == pytest.approx(direct_kid(x, y), rel=1e-6, abs=1e-8)
        # patch level: every (y, x) location of every image is one vector
        loc = lambda a: a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])  # noqa: E731
        assert lt.loc[layer, "patch_fd"] == pytest.approx(direct_fid(loc(f[dom == "real"]), loc(f[dom == "synthetic"])),
                                                          rel=1e-5, abs=1e-8)
        assert (lt.loc[layer, "n_real"], lt.loc[layer, "n_synthetic"]) == (6, 6)
        assert lt.loc[layer, "channels"] == f.shape[1] and lt.loc[layer, "height"] == f.shape[2]
    assert lt.loc["avgpool", "patch_fd"] == lt.loc["avgpool", "fid"]  # 1x1 maps


def test_channel_table_matches_pandas(tables):
    ct = tables[2].channels
    assert list(ct.columns) == CHANNEL_COLUMNS
    f, dom, _, _ = stored(severity_store(2), "layer2")
    vec = pd.DataFrame(f.mean(axis=(2, 3)))
    sub = ct[ct["layer"] == "layer2"].set_index("channel")
    assert len(sub) == f.shape[1]
    r, s = vec[dom == "real"], vec[dom == "synthetic"]
    np.testing.assert_allclose(sub["mean_real"], r.mean(), rtol=1e-12)
    np.testing.assert_allclose(sub["std_synthetic"], s.std(), rtol=1e-9)  # pandas: ddof=1
    np.testing.assert_allclose(sub["active_real"], (f[dom == "real"] > 0).mean(axis=(0, 2, 3)), rtol=1e-12)
    pooled = np.sqrt((5 * r.var() + 5 * s.var()) / 10)
    d = ((s.mean() - r.mean()) / pooled).where(pooled > 0)
    np.testing.assert_allclose(sub["effect_size"], d, rtol=1e-9)


def test_pair_table_matches_skimage(tables):
    pt = tables[2].pairs
    assert list(pt.columns) == PAIR_COLUMNS
    assert len(pt) == 6 * len(LAYERS)
    f, _, pair, ids = stored(severity_store(2), "layer3")
    row = pt[(pt["image"] == "synthetic/rocket.png") & (pt["layer"] == "layer3")].iloc[0]
    assert row["pair"] == "real/rocket.png"
    a, b = f[list(ids).index("synthetic/rocket.png")], f[list(ids).index("real/rocket.png")]
    assert row["mse"] == pytest.approx(((a - b) ** 2).mean(), rel=1e-12)
    assert row["cosine"] == pytest.approx((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()), rel=1e-12)
    per_channel = [structural_similarity(x, y, data_range=max(x.max(), y.max()) - min(x.min(), y.min()),
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
                   for x, y in zip(a, b) if max(x.max(), y.max()) > min(x.min(), y.min())]
    assert row["ssim"] == pytest.approx(np.mean(per_channel), abs=1e-3)
    assert pt[pt["layer"] == "avgpool"]["ssim"].isna().all()  # 1x1 maps


def test_distances_rise_with_severity(tables):
    """Synthetic sets of rising noise and colour cast from the same base photos."""
    lt = pd.concat({s: tables[s].layers.set_index("layer") for s in SEVERITIES}, names=["severity"])
    for layer in LAYERS:
        for col in ("fid", "kid", "patch_fd"):
            vals = [lt.loc[(s, layer), col] for s in SEVERITIES]
            assert np.all(np.diff(vals) > 0), (layer, col, vals)
    means = pd.concat({s: tables[s].pairs.groupby("layer")[["mse", "ssim", "cosine"]].mean()
                       for s in SEVERITIES}, names=["severity"])
    for layer in LAYERS:
        mse = [means.loc[(s, layer), "mse"] for s in SEVERITIES]
        cos = [means.loc[(s, layer), "cosine"] for s in SEVERITIES]
        assert np.all(np.diff(mse) > 0) and np.all(np.diff(cos) < 0), layer
    for layer in ("layer1", "layer2", "layer3"):
        assert np.all(np.diff([means.loc[(s, layer), "ssim"] for s in SEVERITIES]) < 0), layer


def test_gap_columns_on_a_store(tables):
    """The gap columns are the gap module's functions of the stored per-image vectors, with
    the twins of the paired store kept together."""
    from fakesegment_nb.gap import fid_interval, realism_scores

    for s in SEVERITIES:
        lt = tables[s].layers
        assert list(lt.columns) == LAYER_COLUMNS
        assert (lt["fid_lo"] <= lt["fid"]).all() and (lt["fid"] <= lt["fid_hi"]).all()
        np.testing.assert_allclose(lt["fid_ratio"], lt["fid"] / lt["fid_floor"])
        assert list(tables[s].gap["layer"]) == LAYERS
    f, dom, pair, ids = stored(severity_store(2), "layer2")
    vec = f.mean(axis=(2, 3))
    x, y = vec[dom == "real"], vec[dom == "synthetic"]
    real_ids = list(ids[dom == "real"])
    pair_of = np.array([real_ids.index(p) for p in pair[dom == "synthetic"]])
    row = tables[2].layers.set_index("layer").loc["layer2"]
    assert (row["fid_lo"], row["fid_hi"]) == pytest.approx(fid_interval(x, y, pair_of=pair_of, estimate=row["fid"])[:2])
    im = tables[2].images
    sub = im[im["layer"] == "layer2"].set_index("image").loc[list(ids[dom == "synthetic"])]
    np.testing.assert_allclose(sub["score"], realism_scores(x, y, pair_of=pair_of)[0])
    assert sorted(sub["rank"]) == list(range(1, 7)) and sub["score"].idxmax() == sub["rank"].idxmin()
    fused = im[im["layer"] == "fused"].set_index("image")["score"]
    per_layer = im[im["layer"] != "fused"].pivot(index="image", columns="layer", values="score")
    np.testing.assert_allclose(fused.loc[per_layer.index], per_layer.mean(axis=1))


# ---------------------------------------------------------------------------------------------
# edge cases on hand-built stores


def feats(n, c=4, h=12, w=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 1.0, size=(n, c, h, w)).astype(np.float16)


def test_one_domain_empty_is_a_clear_error(tmp_path, capsys):
    store = build_store(tmp_path / "real_only.zarr", {"a": feats(3)}, ["real"] * 3)
    with pytest.raises(FakesegmentError, match="no synthetic images"):
        fs.layer_table(store)
    assert main(["stats", "--store", str(store), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no synthetic images" in err
    assert fs.pair_table(store).empty  # no pairs: an empty table, not an error


def test_one_by_one_maps_and_single_images(tmp_path):
    f = {"big": feats(4, h=12, w=12), "dot": feats(4, c=3, h=1, w=1, seed=1)}
    store = build_store(tmp_path / "s.zarr", f, ["real", "real", "synthetic", "synthetic"],
                        pairs=["", "", "real/img000.png", "real/img001.png"],
                        ids=["real/img000.png", "real/img001.png", "synthetic/img002.png", "synthetic/img003.png"])
    t = compute_stats(store)
    dot = t.layers.set_index("layer").loc["dot"]
    x, y = f["dot"][:2, :, 0, 0].astype(float), f["dot"][2:, :, 0, 0].astype(float)
    assert dot["fid"] == pytest.approx(direct_fid(x, y)) and dot["patch_fd"] == pytest.approx(dot["fid"])
    assert t.pairs[t.pairs["layer"] == "dot"]["ssim"].isna().all()
    assert t.pairs[t.pairs["layer"] == "big"]["ssim"].notna().all()
    # one image per domain: fid, kid and effect sizes are undefined, patch_fd still is
    one = build_store(tmp_path / "one.zarr", {"big": feats(2)}, ["real", "synthetic"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from numpy either
        t1 = compute_stats(one)
    row = t1.layers.iloc[0]
    assert np.isnan(row["fid"]) and np.isnan(row["kid"]) and np.isfinite(row["patch_fd"])
    assert t1.channels["effect_size"].isna().all() and t1.channels["std_real"].isna().all()
    # the gap columns: NaN, and the gap table says why
    assert row[["fid_lo", "fid_hi", "fid_floor", "fid_ratio", "c2st_auroc", "c2st_p"]].isna().all()
    note = t1.gap.iloc[0]["note"]
    assert "2 images per domain" in note and "folds=5" in note and "4 real images" in note
    assert t1.images["score"].isna().all() and t1.images["rank"].isna().all()
    assert set(t1.images["layer"]) == {"big", "fused"}


def test_nan_and_inf_features_give_nan_not_a_crash(tmp_path):
    bad = feats(6, seed=2)
    bad[4, 1, 2, 3] = np.inf
    bad[5, 0, 0, 0] = np.nan
    good = feats(6, seed=3)
    store = build_store(tmp_path / "bad.zarr", {"bad": bad, "good": good}, ["real"] * 3 + ["synthetic"] * 3,
                        pairs=["", "", "", "real/img000.png", "real/img001.png", "real/img002.png"],
                        ids=[f"real/img{i:03d}.png" for i in range(3)] + [f"synthetic/img{i:03d}.png" for i in range(3, 6)])
    with pytest.warns(RuntimeWarning, match="layer bad: 2 images hold NaN or inf"):
        t = compute_stats(store)
    lt = t.layers.set_index("layer")
    assert lt.loc["bad", ["fid", "kid", "patch_fd"]].isna().all() and lt.loc["bad", "n_nonfinite"] == 2
    assert lt.loc["good", ["fid", "kid", "patch_fd"]].notna().all()
    ct = t.channels[t.channels["layer"] == "bad"].set_index("channel")
    assert np.isfinite(ct.loc[3, "effect_size"])  # untouched channels keep their numbers
    pb = t.pairs[t.pairs["layer"] == "bad"].set_index("image")
    assert np.isfinite(pb.loc["synthetic/img003.png", "ssim"])
    assert np.isnan(pb.loc["synthetic/img004.png", "ssim"]) and not np.isfinite(pb.loc["synthetic/img004.png", "mse"])


def test_metrics_refuse_or_nan_cleanly():
    x = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ValueError, match="cannot be compared"):
        fid(x, x[:, :2])
    assert np.isnan(fid(x[:1], x)) and np.isnan(kid(x, x[:1]))
    assert fid(x, x) == pytest.approx(0, abs=1e-9)
    assert np.isnan(cohens_d(np.ones((3, 2)), np.ones((3, 2)))).all()


# ---------------------------------------------------------------------------------------------
# cache, CLI, distributed, several stores


def test_cli_writes_contract_csvs_and_caches_in_store(tmp_path):
    store, _, _ = extracted_store()
    attrs_before = json.loads((store / "zarr.json").read_text())["attributes"]
    out = tmp_path / "out"
    assert main(["stats", "--store", str(store), "--out", str(out)]) == 0
    layers, channels, pairs = (pd.read_csv(out / f"{n}.csv") for n in ("layers", "channels", "pairs"))
    assert {"layer", "fid", "kid", "n_real", "n_synthetic", "patch_fd"} <= set(layers.columns)
    assert list(layers.columns) == LAYER_COLUMNS
    assert list(layers["layer"]) == LAYERS and (layers["n_real"] == 4).all()
    assert {"layer", "channel", "effect_size"} <= set(channels.columns) and len(channels) == 64 + 128 + 256 + 512
    assert list(pairs.columns) == ["image", "pair", "layer", "mse", "ssim", "cosine", "set"] and len(pairs) == 4 * len(LAYERS)
    # one set, named as a store from before sets names it: every table says which
    assert list(layers.columns[:2]) == ["set", "layer"] and list(channels.columns)[-1] == "set"
    assert all(set(t["set"]) == {"synthetic"} for t in (layers, channels, pairs))
    assert set(pairs["image"]) == {f"synthetic/{n}.png" for n in ("astronaut", "coffee", "chelsea", "rocket")}
    # cached in the store's stats/ group, the root attributes untouched
    assert json.loads((store / "zarr.json").read_text())["attributes"] == attrs_before
    tree = fs.open_store(store)
    assert set(tree["stats"].children) == {"layers", "channels", "pairs", "images", "gap"}
    images = pd.read_csv(out / "images.csv")
    assert list(images.columns) == IMAGE_COLUMNS
    assert len(images) == 4 * (len(LAYERS) + 1) and set(images["layer"]) == {*LAYERS, "fused"}
    assert (images.groupby("layer")["rank"].apply(sorted) == [[1, 2, 3, 4]] * (len(LAYERS) + 1)).all()
    pd.testing.assert_frame_equal(images, cached_stats(tree).images, check_dtype=False)
    pd.testing.assert_frame_equal(fs.image_scores(tree), cached_stats(tree).images)
    cached = cached_stats(tree)
    pd.testing.assert_frame_equal(cached.layers, layers, check_dtype=False)
    pd.testing.assert_frame_equal(cached.pairs, pairs, check_dtype=False)
    pd.testing.assert_frame_equal(fs.layer_table(tree), compute_stats(tree, ("layers",)).layers)


def test_cache_goes_stale_when_images_are_added(tmp_path):
    store = build_store(tmp_path / "s.zarr", {"a": feats(4)}, ["real", "real", "synthetic", "synthetic"])
    fs.write_stats(store)
    assert cached_stats(store) is not None
    w = StoreWriter(store)
    start = w.reserve(1)
    w.write_features(start, {"a": feats(1, seed=9)})
    w.commit(pd.DataFrame({"image": ["synthetic/new.png"], "domain": ["synthetic"], "path": ["x"], "pair": [""],
                           "height": [1], "width": [1], "sha256": ["new"]}))
    assert cached_stats(store) is None
    t = fs.write_stats(store, tmp_path / "out")
    assert t.layers.loc[0, "n_synthetic"] == 3 and not (tmp_path / "out" / "pairs.csv").exists()
    assert cached_stats(store).layers.loc[0, "n_synthetic"] == 3
    assert set(fs.image_scores(store)["image"]) == {"synthetic/img002.png", "synthetic/img003.png", "synthetic/new.png"}


def test_same_numbers_with_a_distributed_client():
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None):
        t = compute_stats(severity_store(1), layers=["layer2", "avgpool"])
    ref = compute_stats(severity_store(1), layers=["layer2", "avgpool"])
    pd.testing.assert_frame_equal(t.layers, ref.layers)
    pd.testing.assert_frame_equal(t.pairs, ref.pairs)


def test_compare_stores_side_by_side(tables):
    a, b = severity_store(1), severity_store(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cmp = fs.compare_stores([a, b], labels=["mild", "strong"])
    assert list(cmp.columns.get_level_values(0).unique()) == ["mild", "strong"]
    assert list(cmp[("mild", "layer")]) == LAYERS
    assert (cmp[("strong", "fid")] > cmp[("mild", "fid")]).all()
    for field in ("fid_lo", "fid_hi", "fid_floor", "fid_ratio", "c2st_auroc", "c2st_p", "c2st_lo", "c2st_hi"):
        assert cmp[("mild", field)].notna().all(), field
    assert (cmp[("strong", "c2st_auroc")] >= cmp[("mild", "c2st_auroc")]).all()
    # the same real photos (by sha256), other synthetic images: comparable, said, no warning
    assert cmp.attrs["comparable"] and cmp.attrs["note"].startswith("The stores share the same 6 real images (by sha256)")
    assert [l["line"] for l in cmp.attrs["lines"]] == ["mild", "strong"]
    with pytest.raises(FakesegmentError, match="distinct label"):
        fs.compare_stores([a, b], labels=["x", "x"])
    other = extracted_store()[0]
    with pytest.warns(UserWarning, match=r"The stores share (no real image|\d+ of their real images)"):
        two = fs.compare_stores([a, other])
    # named by their path stems; a repeated stem gets its parent folder
    assert list(two.columns.get_level_values(0).unique()) == [fs.stats.store_name(a), fs.stats.store_name(other)]
    assert two.columns.names == ["line", "field"] and not two.attrs["comparable"]


def test_partners_are_synthetic_images_paired_with_a_stored_real_image():
    from fakesegment_nb.store import partners

    images = pd.DataFrame({"domain": ["real", "synthetic", "synthetic", "real", "synthetic", "synthetic"],
                           "pair": ["s/b", "r/a", "r/gone", "", "s/b", "r/d"]},
                          index=pd.Index(["r/a", "s/b", "s/c", "r/d", "s/e", "s/f"], name="image"))
    found = partners(images)
    # s/c's partner is not stored, s/e names a synthetic image; s/b and s/f have real partners
    assert found.to_dict("list") == {"image": ["s/b", "s/f"], "pair": ["r/a", "r/d"], "i_syn": [1, 5], "i_real": [0, 3],
                                     "set": ["synthetic", "synthetic"]}  # a table without sets: one set
    assert list(partners(images.iloc[:0]).columns) == ["image", "pair", "i_syn", "i_real", "set"]


# ---------------------------------------------------------------------------------------------
# several synthetic sets in one store


@pytest.fixture(scope="module")
def set_tables():
    stores = two_set_stores()
    return {name: compute_stats(stores[name]) for name in ("both", "synthetic", "v2")}


def relative(ids):
    """Images' paths in their folder (a set's id prefix differs between stores: synthetic/, v2/)."""
    return [i.split("/", 1)[1] for i in ids]


def one_set(df, name):
    return df[df["set"] == name].reset_index(drop=True)


def test_each_set_equals_a_store_of_that_set_alone(set_tables):
    both = set_tables["both"]
    assert list(both.layers["set"]) == ["synthetic"] * 3 + ["v2"] * 3
    assert list(both.layers["layer"]) == FAST_LAYERS * 2 and list(both.layers.columns) == LAYER_COLUMNS
    assert list(both.layers["n_synthetic"]) == [6] * 3 + [7] * 3 and (both.layers["n_real"] == 6).all()
    for name in ("synthetic", "v2"):
        alone = set_tables[name]
        assert set(alone.layers["set"]) == {name}
        rows = one_set(both.layers, name)
        # every figure: distances, the bootstrap interval, the floor, c2st and its permutation p-value
        assert rows[["fid", "fid_lo", "fid_floor", "c2st_auroc", "c2st_p"]].notna().all().all()
        pd.testing.assert_frame_equal(rows, alone.layers, rtol=1e-6)
        pd.testing.assert_frame_equal(one_set(both.gap, name), alone.gap, rtol=1e-6)
        pd.testing.assert_frame_equal(one_set(both.channels, name), alone.channels, rtol=1e-6)
        for tab in ("images", "pairs"):
            mine, ref = one_set(both[tab], name), alone[tab]
            assert relative(mine["image"]) == relative(ref["image"])
            pd.testing.assert_frame_equal(mine.drop(columns="image"), ref.drop(columns="image"), rtol=1e-6)
    # the sets differ (severity 1 and 3), and ranks run within a set and layer
    assert (one_set(both.layers, "v2")["fid"].to_numpy() > one_set(both.layers, "synthetic")["fid"].to_numpy()).all()
    ranks = both.images.groupby(["set", "layer"], sort=False)["rank"].apply(sorted)
    assert len(ranks) == 2 * (len(FAST_LAYERS) + 1)
    assert all(r == list(range(1, {"synthetic": 6, "v2": 7}[s] + 1)) for (s, _), r in ranks.items())
    # pairs within a set; v2's extra image has none
    assert list(both.pairs["set"].value_counts().sort_index()) == [6 * 3, 6 * 3]
    assert "v2/extra.png" in set(both.images["image"]) and "v2/extra.png" not in set(both.pairs["image"])


def test_readers_pick_a_set(set_tables):
    store = two_set_stores()["both"]
    scores = fs.image_scores(store, "fused", cache=False, set_name="synthetic")  # computes that set only
    assert list(scores.columns) == IMAGE_COLUMNS and list(scores["rank"]) == [1, 2, 3, 4, 5, 6]
    pd.testing.assert_frame_equal(scores, one_set(set_tables["both"].images, "synthetic")
                                  .query("layer == 'fused'").reset_index(drop=True))
    with pytest.raises(ParameterError, match="'v3' is not a synthetic set of the store; it has 'synthetic', 'v2'") as exc:
        fs.layer_table(store, set_name="v3")
    assert exc.value.param == "set_name"


def test_a_set_added_to_a_store_computes_only_that_set(tmp_path, monkeypatch, set_tables):
    from fakesegment_nb import stats as stats_module
    from fakesegment_nb.extract import extract
    from fakesegment_nb.stats import fingerprints

    stores = two_set_stores()
    store = copy_store(stores["synthetic"], tmp_path)
    fs.write_stats(store)
    before = fingerprints(store)
    extract(stores["real"], stores["v2_dir"], store, set_name="v2", model=FAST_MODEL, layers=FAST_LAYERS,
            weights="random:0", progress=False)
    after = fingerprints(store)
    assert list(after) == ["synthetic", "v2"] and after["synthetic"] == before["synthetic"]
    assert cached_stats(store) is None  # v2 is not cached yet
    asked = []
    original = stats_module.layer_stats
    monkeypatch.setattr(stats_module, "layer_stats", lambda *a, **k: asked.append(list(a[3])) or original(*a, **k))
    t = fs.write_stats(store, tmp_path / "out")
    assert asked == [["v2"]] * len(FAST_LAYERS)  # the cached set is not computed again
    for name in TABLES:  # the cached rows and the new set's, in store order: the two-set store's tables
        pd.testing.assert_frame_equal(t[name], set_tables["both"][name], rtol=1e-6, check_dtype=False)
    csv = pd.read_csv(tmp_path / "out" / "layers.csv")
    assert list(csv["set"]) == ["synthetic"] * 3 + ["v2"] * 3
    assert set(pd.read_csv(tmp_path / "out" / "images.csv")["set"]) == {"synthetic", "v2"}
    asked.clear()
    pd.testing.assert_frame_equal(fs.write_stats(store).layers, t.layers)
    assert asked == [] and cached_stats(store) is not None
    # the readers, from the cache: one row per (set, layer), or one set's
    profile = fs.gap_profile(store)
    assert asked == [] and list(profile.columns[:2]) == ["set", "layer"] and {"c2st_lo", "note"} <= set(profile.columns)
    pd.testing.assert_frame_equal(profile, t.layers.merge(t.gap, on=["set", "layer"]))
    v2 = fs.gap_profile(store, set_name="v2")
    pd.testing.assert_frame_equal(v2, one_set(profile, "v2"))
    assert fs.pair_table(store, "layer2", set_name="v2").shape[0] == 6 and asked == []


def handmade_sets(path, n_real=6, sizes=(("a", 5), ("b", 6)), seed=0):
    """A store of exactly given features: ``n_real`` real images and the synthetic sets ``sizes``."""
    rng = np.random.default_rng(seed)
    n = n_real + sum(k for _, k in sizes)
    sets = [""] * n_real + [s for s, k in sizes for _ in range(k)]
    ids = [f"real/r{i}.png" for i in range(n_real)] + [f"{s}/s{i}.png" for i, s in enumerate(sets[n_real:])]
    w = StoreWriter(path)
    w.create({"model": "handmade", "weights": "random:0", "weights_trained": False, "input_size": [0, 0],
              "layers": ["a"]}, {"a": (4, 6, 6)})
    w.write_features(w.reserve(n), {"a": rng.gamma(2.0, 1.0, (n, 4, 6, 6)).astype(np.float16)})
    w.commit(pd.DataFrame({"image": ids, "domain": ["real"] * n_real + ["synthetic"] * (n - n_real), "set": sets,
                           "path": ids, "pair": "", "height": 1, "width": 1, "sha256": [f"h{i}" for i in range(n)]}))
    return path


def test_a_real_image_added_makes_every_set_stale(tmp_path, monkeypatch):
    from fakesegment_nb import stats as stats_module
    from fakesegment_nb.stats import fingerprints

    store = handmade_sets(tmp_path / "s.zarr")
    fs.write_stats(store)
    before = fingerprints(store)
    assert cached_stats(store) is not None
    w = StoreWriter(store)
    # a set added: the readers take the cached sets' rows and compute the new set's (writing nothing)
    w.write_features(w.reserve(5), {"a": feats(5, c=4, h=6, w=6, seed=4)})
    w.commit(pd.DataFrame({"image": [f"c/s{i}.png" for i in range(5)], "domain": "synthetic", "set": "c",
                           "path": "x", "pair": "", "height": 1, "width": 1, "sha256": [f"c{i}" for i in range(5)]}))
    asked = []
    original = stats_module.layer_stats
    monkeypatch.setattr(stats_module, "layer_stats", lambda *a, **k: asked.append(list(a[3])) or original(*a, **k))
    profile = fs.gap_profile(store)
    assert asked == [["c"]] and list(profile["set"]) == ["a", "b", "c"]
    pd.testing.assert_frame_equal(profile, fs.gap_profile(store, cache=False))
    assert cached_stats(store) is None and fingerprints(store)["a"] == before["a"]
    w.write_features(w.reserve(1), {"a": feats(1, c=4, h=6, w=6, seed=5)})
    w.commit(pd.DataFrame({"image": ["real/new.png"], "domain": ["real"], "set": [""], "path": ["x"], "pair": [""],
                           "height": [1], "width": [1], "sha256": ["new"]}))
    after = fingerprints(store)
    assert all(after[s] != before[s] for s in ("a", "b")) and cached_stats(store) is None
    t = fs.write_stats(store)
    assert list(t.layers["n_real"]) == [7, 7, 7] and list(t.layers["set"]) == ["a", "b", "c"]
    # a cache written before sets (one fingerprint, no set column) reads as stale
    import zarr

    g = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    for name in g["stats"]:
        attrs = dict(g["stats"][name].attrs)
        g["stats"][name].attrs.put({"fingerprint": "old", "has_pairs": attrs["has_pairs"]})
    assert cached_stats(store) is None


def test_a_store_from_before_sets_reports_one_set_named_synthetic(tmp_path, fast_store):
    import zarr

    from fakesegment_nb.writer import consolidate

    old = copy_store(fast_store, tmp_path)
    g = zarr.open_group(str(old), mode="r+", use_consolidated=False)
    del g["set"]  # as the code before sets wrote it
    consolidate(old)
    assert "set" not in xr.open_datatree(old, engine="zarr").to_dataset()
    t = fs.write_stats(old, tmp_path / "out")
    ref = compute_stats(fast_store)
    for name in TABLES:
        assert set(t[name]["set"]) == {"synthetic"}, name
        pd.testing.assert_frame_equal(t[name], ref[name], check_dtype=False)
    assert set(pd.read_csv(tmp_path / "out" / "pairs.csv")["set"]) == {"synthetic"}
    assert cached_stats(old) is not None
