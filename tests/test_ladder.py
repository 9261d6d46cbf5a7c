"""A severity ladder on the trained networks: the same real crops against synthetic sets that
depart further and further from them (``make_probe(severity=...)``), for each of the three
ImageNet-trained EfficientNet-Lites."""

from __future__ import annotations

import numpy as np
import pytest

from fakesegment_nb.extract import extract
from fakesegment_nb.probe import make_probe
from fakesegment_nb.stats import image_scores, layer_table

SEVERITIES = (0.25, 0.5, 1.0)
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@pytest.fixture(scope="module")
def ladders(tmp_path_factory):
    """``model -> {severity: store}`` (ImageNet weights), 8 pairs of 160 px crops, seed 1; each
    network's stores are extracted when a test first asks for them."""
    root = tmp_path_factory.mktemp("ladder")
    probes = {s: make_probe(root / f"probe_{s}", n=8, seed=1, size=160, severity=s).out for s in SEVERITIES}
    built: dict = {}

    def get(model: str) -> dict:
        if model not in built:
            built[model] = {}
            for s, probe in probes.items():
                store = built[model][s] = root / f"{model}_{s}.zarr"
                extract(probe / "real", probe / "synthetic", store, model=model, weights="auto", progress=False)
        return built[model]

    return get


@pytest.fixture(scope="module")
def ladder(ladders):
    """{severity: store} of efficientnet_lite0."""
    return ladders("efficientnet_lite0")


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
def test_every_layers_fid_rises_with_severity(ladders, model):
    ladder = ladders(model)
    fids = np.array([layer_table(ladder[s], cache=False).set_index("layer")["fid"].to_numpy() for s in SEVERITIES])
    layers = list(layer_table(ladder[1.0]).layer)
    assert layers == ["p2", "p3", "p4", "p5"]
    assert (np.diff(fids, axis=0) > 0).all(), dict(zip(layers, fids.T.round(2).tolist()))
    # a wide range, not a drift (measured: lite0 14x-18x, lite1 LITE1_RANGE, lite2 LITE2_RANGE)
    assert (fids[-1] / fids[0] > 5).all(), (fids[-1] / fids[0]).round(1).tolist()


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


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """``model -> store``: one synthetic set holding a mild (0.25) and a severe (1.0) render of
    each of 8 scenes (160 px, seed 2), against the 8 real crops; extracted per network on demand."""
    import shutil

    root = tmp_path_factory.mktemp("mixed")
    mild = make_probe(root / "mild", n=8, seed=2, size=160, severity=0.25).out
    severe = make_probe(root / "severe", n=8, seed=2, size=160, severity=1.0).out
    syn = root / "synthetic"
    syn.mkdir()
    for p in sorted((mild / "synthetic").glob("*.png")):
        shutil.copy(p, syn / f"mild_{p.name}")
        shutil.copy(severe / "synthetic" / p.name, syn / f"severe_{p.name}")
    built: dict = {}

    def get(model: str, weights: str = "auto"):
        if (model, weights) not in built:
            store = built[model, weights] = root / f"{model}_{weights.replace(':', '')}.zarr"
            extract(mild / "real", syn, store, model=model, weights=weights, progress=False)
        return built[model, weights]

    get.scenes = [p.name for p in sorted((mild / "synthetic").glob("*.png"))]
    return get


def test_image_scores_rank_severe_renders_above_mild_ones(mixed):
    """The fused per-image score puts the severe render of a scene above its mild one for
    (almost) every scene."""
    store = mixed("efficientnet_lite0")
    fused = image_scores(store, "fused").set_index("image")["score"]
    wins = [fused[f"synthetic/severe_{name}"] > fused[f"synthetic/mild_{name}"] for name in mixed.scenes]
    assert sum(wins) >= 7, fused.round(2).to_dict()
    ranks = image_scores(store, "fused").set_index("image")["rank"]
    assert np.mean([ranks[i] for i in ranks.index if "severe_" in i]) < np.mean([ranks[i] for i in ranks.index if "mild_" in i])


def test_the_trained_networks_agree_on_the_mixed_ladder(mixed):
    """The three networks rank the same 16 synthetic images alike (severity drives the score of
    each), and the sentence says so; an untrained network would be named a smoke test."""
    from fakesegment_nb.agreement import network_agreement

    stores = [mixed(m) for m in MODELS]
    ag = network_agreement(stores)
    assert [l.split(" (")[0] for l in ag.trained] == list(MODELS) and ag.smoke == []
    assert (ag.images["n"] == 16).all() and len(ag.images) == 3
    assert (ag.images["rho"] > 0.5).all() and (ag.images["p"] < 0.05).all(), ag.images.round(3).to_dict("records")
    assert ag.sentence.startswith("The trained networks agree on which synthetic images look least real")
    assert set(ag.layers["peak"]) <= {"p2", "p3", "p4", "p5"} and len(ag.profiles) == 3
    assert "peaks" in ag.sentence and "smoke test" not in ag.sentence


def test_the_reports_cross_architecture_section_says_whether_they_agree(mixed):
    """The report's gap profile with compare stores: the trained networks side by side with the
    computed sentence; a random-weights SSD300 labelled a smoke test and left out of it."""
    from fakesegment_nb.widgets import ReportContext

    from support import tiny_store

    rep = ReportContext(mixed("efficientnet_lite0"), compare=[str(mixed("efficientnet_lite1")), str(tiny_store())])
    html = rep.gap_profile().data
    assert "<b>Across networks.</b> The trained networks agree on which synthetic images look least real" in html
    assert "efficientnet_lite1 (imagenet:efficientnet-lite1-77cc7160, trained)" in html
    assert "ssd300_vgg16 (random:0, untrained): smoke test" in html
    assert "ssd300_vgg16 with random weights is a smoke test, not a second opinion" in html
    assert "not hold the same images" in html  # the SSD store is another probe: said, not hidden
