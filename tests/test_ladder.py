"""A severity ladder on the trained network: the same real crops against synthetic sets that
depart further and further from them (``make_probe(severity=...)``)."""

from __future__ import annotations

import numpy as np
import pytest

from fakesegment_nb.extract import extract
from fakesegment_nb.probe import make_probe
from fakesegment_nb.stats import image_scores, layer_table

SEVERITIES = (0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """{severity: store} of efficientnet_lite0 (ImageNet weights), 8 pairs of 160 px crops, seed 1."""
    root = tmp_path_factory.mktemp("ladder")
    stores = {}
    for s in SEVERITIES:
        probe = make_probe(root / f"probe_{s}", n=8, seed=1, size=160, severity=s).out
        stores[s] = root / f"store_{s}.zarr"
        extract(probe / "real", probe / "synthetic", stores[s], model="efficientnet_lite0", weights="auto",
                progress=False)
    return stores


def test_probe_severity_blends_real_and_render(tmp_path):
    from PIL import Image

    full = make_probe(tmp_path / "full", n=2, seed=3, size=96).out
    half = make_probe(tmp_path / "half", n=2, seed=3, size=96, severity=0.5).out
    zero = make_probe(tmp_path / "zero", n=2, seed=3, size=96, severity=0.0).out

    def read(p):
        return np.asarray(Image.open(p), np.float64)

    real, render = read(full / "real/scene_001.png"), read(full / "synthetic/scene_001.png")
    assert np.array_equal(read(zero / "synthetic/scene_001.png"), real)
    np.testing.assert_allclose(read(half / "synthetic/scene_001.png"), (real + render) / 2, atol=1.01)
    assert (read(half / "masks/scene_001.png") == read(full / "masks/scene_001.png")).all()
    from fakesegment_nb.errors import FakesegmentError

    with pytest.raises(FakesegmentError, match=r"severity must be in \[0, 1\]"):
        make_probe(tmp_path / "bad", n=1, severity=2.0)


def test_every_layers_fid_rises_with_severity(ladder):
    fids = np.array([layer_table(ladder[s], cache=False).set_index("layer")["fid"].to_numpy() for s in SEVERITIES])
    layers = list(layer_table(ladder[1.0]).layer)
    assert layers == ["p2", "p3", "p4", "p5"]
    assert (np.diff(fids, axis=0) > 0).all(), dict(zip(layers, fids.T.round(2).tolist()))
    assert (fids[-1] / fids[0] > 5).all()  # a wide range, not a drift (measured: 14x-18x)


def test_gap_profile_rises_with_severity(ladder):
    """c2st AUROC and fid_ratio (issue 11) read the ladder like fid: higher for more severe renders."""
    tabs = [layer_table(ladder[s], cache=False).set_index("layer") for s in SEVERITIES]
    ratio = np.array([t["fid_ratio"].to_numpy() for t in tabs])
    auc = np.array([t["c2st_auroc"].to_numpy() for t in tabs])
    assert (np.diff(ratio, axis=0) > 0).all(), ratio.round(2).tolist()
    assert (auc[-1] >= auc[0]).all() and auc[-1].mean() > auc[0].mean() + 0.1, auc.round(2).tolist()
    assert (tabs[-1]["c2st_p"] < 0.05).all()  # the full render is told apart in every layer
    for t in tabs:
        assert (t["fid_lo"] <= t["fid"]).all() and (t["fid"] <= t["fid_hi"]).all()


def test_image_scores_rank_severe_renders_above_mild_ones(tmp_path):
    """One synthetic set holding a mild (0.25) and a severe (1.0) render of every scene: the
    fused per-image score puts the severe one higher for (almost) every scene."""
    import shutil

    mild = make_probe(tmp_path / "mild", n=8, seed=2, size=160, severity=0.25).out
    severe = make_probe(tmp_path / "severe", n=8, seed=2, size=160, severity=1.0).out
    syn = tmp_path / "synthetic"
    syn.mkdir()
    for p in sorted((mild / "synthetic").glob("*.png")):
        shutil.copy(p, syn / f"mild_{p.name}")
        shutil.copy(severe / "synthetic" / p.name, syn / f"severe_{p.name}")
    store = tmp_path / "mixed.zarr"
    extract(mild / "real", syn, store, model="efficientnet_lite0", weights="auto", progress=False)
    fused = image_scores(store, "fused").set_index("image")["score"]
    wins = [fused[f"synthetic/severe_{p.name}"] > fused[f"synthetic/mild_{p.name}"]
            for p in sorted((mild / "synthetic").glob("*.png"))]
    assert sum(wins) >= 7, fused.round(2).to_dict()
    ranks = image_scores(store, "fused").set_index("image")["rank"]
    assert np.mean([ranks[i] for i in ranks.index if "severe_" in i]) < np.mean([ranks[i] for i in ranks.index if "mild_" in i])
