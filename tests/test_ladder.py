"""A severity ladder on the trained networks: the same real crops against synthetic sets that
depart further and further from them (``make_probe(severity=...)``), for each of the three
ImageNet-trained EfficientNet-Lites.

One probe (8 scenes of 160 px crops, seed 1) at severities 0.25, 0.5 and 1: its real crops are the
same at every severity. Each network extracts one store holding the real crops and all 24
synthetic ones (``combined``; FID of a severity is the FID between the real vectors and that
severity's, so it is the FID of a store holding that severity alone); efficientnet_lite0 also
extracts one store per severity (``ladder``) for the gap profile, which compares a whole store.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from fakesegment_nb.extract import extract
from fakesegment_nb.metrics import fid
from fakesegment_nb.probe import make_probe
from fakesegment_nb.stats import image_scores, layer_table, write_stats
from fakesegment_nb.store import feature_layer, image_table

SEVERITIES = (0.25, 0.5, 1.0)
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
LAYERS = ["p2", "p3", "p4", "p5"]


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """{severity: probe folder}: 8 pairs of 160 px crops, seed 1 (the same real crops in each)."""
    root = tmp_path_factory.mktemp("ladder-probes")
    return {s: make_probe(root / f"probe_{s}", n=8, seed=1, size=160, severity=s).out for s in SEVERITIES}


@pytest.fixture(scope="module")
def ladder(probes, tmp_path_factory):
    """{severity: store} of efficientnet_lite0 (ImageNet weights), one store per severity."""
    root = tmp_path_factory.mktemp("ladder")
    stores = {}
    for s, probe in probes.items():
        stores[s] = root / f"store_{s}.zarr"
        extract(probe / "real", probe / "synthetic", stores[s], model="efficientnet_lite0", weights="auto",
                progress=False)
    return stores


@pytest.fixture(scope="module")
def combined(probes, tmp_path_factory):
    """``model -> store`` (ImageNet weights, statistics cached): the 8 real crops against
    ``synthetic/sev<S>_<scene>.png`` for every severity; extracted when a test first asks."""
    root = tmp_path_factory.mktemp("ladder-combined")
    syn = root / "synthetic"
    syn.mkdir()
    for s, probe in probes.items():
        for p in sorted((probe / "synthetic").glob("*.png")):
            shutil.copy(p, syn / f"sev{s}_{p.name}")
    built: dict = {}

    def get(model: str):
        if model not in built:
            store = built[model] = root / f"{model}.zarr"
            extract(probes[1.0] / "real", syn, store, model=model, weights="auto", progress=False)
            write_stats(store)
        return built[model]

    get.scenes = [p.name for p in sorted((probes[1.0] / "synthetic").glob("*.png"))]
    return get


def severity_fids(store) -> np.ndarray:
    """FID per (severity, layer), DESIGN.md section 5: per-image vectors = features averaged over y, x."""
    table = image_table(store)
    real = (table["domain"] == "real").to_numpy()
    out = []
    for s in SEVERITIES:
        sel = table.index.str.startswith(f"synthetic/sev{s}_")
        assert sel.sum() == 8
        row = []
        for layer in LAYERS:
            v = feature_layer(store, layer).astype("float64").mean(("y", "x")).values
            row.append(fid(v[real], v[sel]))
        out.append(row)
    return np.array(out)


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


@pytest.mark.parametrize("model", MODELS)
def test_every_layers_fid_rises_with_severity(combined, model):
    fids = severity_fids(combined(model))
    assert (np.diff(fids, axis=0) > 0).all(), dict(zip(LAYERS, fids.T.round(2).tolist()))
    # a wide range, not a drift (measured end to end: lite0 9x-20x, lite1 10x-22x, lite2 9x-19x)
    assert (fids[-1] / fids[0] > 5).all(), (fids[-1] / fids[0]).round(1).tolist()


def test_gap_profile_rises_with_severity(ladder, combined):
    """c2st AUROC and fid_ratio (issue 11) read the ladder like fid: higher for more severe renders;
    and the stores' ``fid`` is the FID of the combined store's severity (one definition)."""
    tabs = [layer_table(ladder[s], cache=False).set_index("layer") for s in SEVERITIES]
    assert list(tabs[0].index) == LAYERS
    np.testing.assert_allclose(np.array([t["fid"].to_numpy() for t in tabs]),
                               severity_fids(combined("efficientnet_lite0")), rtol=1e-3)
    ratio = np.array([t["fid_ratio"].to_numpy() for t in tabs])
    auc = np.array([t["c2st_auroc"].to_numpy() for t in tabs])
    assert (np.diff(ratio, axis=0) > 0).all(), ratio.round(2).tolist()
    assert (auc[-1] >= auc[0]).all() and auc[-1].mean() > auc[0].mean() + 0.1, auc.round(2).tolist()
    assert (tabs[-1]["c2st_p"] < 0.05).all()  # the full render is told apart in every layer
    for t in tabs:
        assert (t["fid_lo"] <= t["fid"]).all() and (t["fid"] <= t["fid_hi"]).all()


def test_image_scores_rank_severe_renders_above_mild_ones(combined):
    """One synthetic set holding a mild (0.25) and a severe (1.0) render of every scene (and the
    0.5 one): the fused per-image score puts the severe one higher for (almost) every scene."""
    store = combined("efficientnet_lite0")
    fused = image_scores(store, "fused").set_index("image")["score"]
    wins = [fused[f"synthetic/sev1.0_{name}"] > fused[f"synthetic/sev0.25_{name}"] for name in combined.scenes]
    assert sum(wins) >= 7, fused.round(2).to_dict()
    ranks = image_scores(store, "fused").set_index("image")["rank"]
    assert np.mean([ranks[i] for i in ranks.index if "sev1.0_" in i]) < np.mean([ranks[i] for i in ranks.index
                                                                                 if "sev0.25_" in i])


def test_the_trained_networks_agree_on_the_ladder(combined):
    """The three networks rank the same 24 synthetic images alike (severity drives each one's
    score), and the sentence says so."""
    from fakesegment_nb.agreement import network_agreement

    ag = network_agreement([combined(m) for m in MODELS])
    assert [l.split(" (")[0] for l in ag.trained] == list(MODELS) and ag.smoke == []
    assert (ag.images["n"] == 24).all() and len(ag.images) == 3
    assert (ag.images["rho"] > 0.5).all() and (ag.images["p"] < 0.05).all(), ag.images.round(3).to_dict("records")
    assert ag.sentence.startswith("The trained networks agree on which synthetic images look least real")
    assert set(ag.layers["peak"]) <= set(LAYERS) and len(ag.profiles) == 3
    assert "peaks" in ag.sentence and "smoke test" not in ag.sentence


def test_the_reports_cross_architecture_section_says_whether_they_agree(combined):
    """The report's gap profile with compare stores: the trained networks side by side with the
    computed sentence; a random-weights SSD300 labelled a smoke test and left out of it."""
    from fakesegment_nb.widgets import ReportContext

    from support import tiny_store

    rep = ReportContext(combined("efficientnet_lite0"), compare=[str(combined("efficientnet_lite2")), str(tiny_store())])
    html = rep.gap_profile().data
    assert "<b>Across networks.</b> The trained networks agree on which synthetic images look least real" in html
    # lines named by the stores' path stems, each table headed by its network
    assert "efficientnet_lite2 -- set synthetic, efficientnet_lite2 " \
           "(imagenet:efficientnet-lite2-9656183e, trained)" in html
    assert "store: smoke test -- set synthetic, ssd300_vgg16 (random:0, untrained)" in html
    assert "ssd300_vgg16 with random weights is a smoke test, not a second opinion" in html
    # the SSD store is another probe: what the stores share is said, not hidden
    assert re.search(r"<b>What the stores share.</b> The stores do not all hold the same real images \(by sha256\): "
                     r"of the 8 of efficientnet_lite0, efficientnet_lite2 holds the same 8; store (none of them \(it "
                     r"holds 3 others\)|\d of them \(of its 3\))\.", html), html
