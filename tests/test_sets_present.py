"""Synthetic sets on the presentation side (issue 18 items 2-3): compare_stores draws one line per
(store, set) and says what the stores share; the DomainDashboard, the Gallery and the report name
the sets; the enhancer's before/after gap comes from two sets of one store.

The stores are :func:`support.two_set_stores`: the same 6 real photos with the sets ``synthetic``
and ``v2`` in one store (``both``) and each set alone in its own store (resnet18, random weights).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import fakesegment_nb as fs
from fakesegment_nb.errors import FakesegmentError
from fakesegment_nb.stats import comparability, line_labels, store_name, store_names

from support import FAST_LAYERS, copy_store, two_set_stores

NUMERIC = ["fid", "kid", "patch_fd", "n_real", "n_synthetic", "fid_lo", "fid_hi", "fid_floor", "fid_ratio",
           "c2st_auroc", "c2st_p", "c2st_lo", "c2st_hi"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Copies of :func:`support.two_set_stores`'s ``both``, ``synthetic`` and ``v2`` with their
    statistics cached (each set's computed once for the module), ``both`` with ``reference`` maps."""
    from fakesegment_nb.maps import compute_maps

    out = {}
    for name in ("both", "synthetic", "v2"):
        out[name] = copy_store(two_set_stores()[name], tmp_path_factory.mktemp(f"present-{name}"))
        fs.write_stats(out[name])
    compute_maps(out["both"], "reference")
    return out


@pytest.fixture(scope="module")
def presented(stores):
    return stores["both"]


def handmade(path, real_shas):
    """A store of exactly given features (one small layer): real images with the contents
    ``real_shas``, 5 synthetic ones; its statistics take a moment."""
    from fakesegment_nb.writer import StoreWriter

    rng = np.random.default_rng(len(real_shas))
    n_real, n = len(real_shas), len(real_shas) + 5
    ids = [f"real/r{i}.png" for i in range(n_real)] + [f"synthetic/s{i}.png" for i in range(5)]
    w = StoreWriter(path)
    w.create({"model": "handmade", "weights": "random:0", "weights_trained": False, "input_size": [0, 0],
              "layers": ["a"]}, {"a": (4, 4, 4)})
    w.write_features(w.reserve(n), {"a": rng.gamma(2.0, 1.0, (n, 4, 4, 4)).astype(np.float16)})
    w.commit(pd.DataFrame({"image": ids, "domain": ["real"] * n_real + ["synthetic"] * 5, "set": [""] * n_real
                           + ["synthetic"] * 5, "path": ids, "pair": "", "height": 1, "width": 1,
                           "sha256": list(real_shas) + [f"s{i}" for i in range(5)]}))
    return path


def test_store_names_are_path_stems_and_repeated_stems_get_their_folder():
    assert store_name("runs/a/store_lite2.zarr") == "store_lite2"
    assert store_name("s3://bucket/renders/v1.zarr/") == "v1"
    assert store_names(["x/a/store.zarr", "x/b/store.zarr", "y/lite2.zarr"]) == ["a/store", "b/store", "lite2"]
    assert store_names(["a/store.zarr", "a/store.zarr/"]) == ["a/store #1", "a/store #2"]
    # one store of several sets: lines named by the set; several stores: by the store (and set)
    assert line_labels(["both"], [["synthetic", "v2"]]) == ["synthetic", "v2"]
    assert line_labels(["both", "v2"], [["synthetic", "v2"], ["v2"]]) == ["both · synthetic", "both · v2", "v2"]


def test_compare_stores_one_line_per_store_and_set_equal_to_single_set_stores(stores):
    """Done-when of issue 18: each set's figures in the two-set store equal its own store's to
    1e-6 relative; the note says the stores share the same real images, and nothing warns."""
    s = stores
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cmp = fs.compare_stores([s["both"], s["synthetic"], s["v2"]])
    lines = [l["line"] for l in cmp.attrs["lines"]]
    assert lines == ["both · synthetic", "both · v2", "synthetic", "v2"]
    assert list(cmp.columns.get_level_values(0).unique()) == lines and cmp.columns.names == ["line", "field"]
    assert [(l["store"], l["set"]) for l in cmp.attrs["lines"]] == [("both", "synthetic"), ("both", "v2"),
                                                                    ("synthetic", "synthetic"), ("v2", "v2")]
    for name in ("synthetic", "v2"):
        assert list(cmp[(f"both · {name}", "layer")]) == FAST_LAYERS
        assert cmp[f"both · {name}"][NUMERIC].notna().all().all()
        pd.testing.assert_frame_equal(cmp[f"both · {name}"][NUMERIC], cmp[name][NUMERIC], rtol=1e-6)
    assert (cmp[("both · v2", "fid")] > cmp[("both · synthetic", "fid")]).all()  # severity 3 vs 1: not one line twice
    assert cmp.attrs["comparable"]
    assert cmp.attrs["note"] == ("The stores share the same 6 real images (by sha256), but no synthetic image: "
                                 "each set is measured against the same real images.")
    # one store of two sets: the lines are the sets, and the note says they share its real images
    one = fs.compare_stores([s["both"]])
    assert [l["line"] for l in one.attrs["lines"]] == ["synthetic", "v2"]
    assert one.attrs["note"] == "Every set of both (synthetic, v2) is compared with the same 6 real images: the " \
                                "store holds them once."


def test_what_stores_share_some_or_none_of_their_real_images(tmp_path):
    a = handmade(tmp_path / "a" / "store.zarr", ["h0", "h1", "h2", "h3", "h4", "h5"])
    b = handmade(tmp_path / "b" / "store.zarr", ["h0", "h1", "h2", "x3", "x4", "x5"])
    c = handmade(tmp_path / "c.zarr", ["y0", "y1", "y2", "y3", "y4", "y5"])
    with pytest.warns(UserWarning, match="share 3 of their real images") as caught:
        cmp = fs.compare_stores([a, b])
    assert len(caught) == 1 and [l["line"] for l in cmp.attrs["lines"]] == ["a/store", "b/store"]
    assert cmp.attrs["note"].startswith("The stores share 3 of their real images (by sha256; real images: a/store 6, "
                                        "b/store 6): their distances are not fully comparable")
    note, ok = comparability([a, c])
    assert not ok and note.startswith("The stores share no real image (by sha256; real images: store 6, c 6)")
    note, ok = comparability([a, b, c])  # more than two: each against the first
    assert not ok and note.startswith("The stores do not all hold the same real images (by sha256): of the 6 of "
                                      "a/store, b/store 3 of them (of its 6); c none of them (it holds 6 others).")


def test_network_agreement_takes_a_multi_set_stores_first_set_and_says_so(stores):
    from fakesegment_nb.agreement import network_agreement

    s = stores
    ag = network_agreement([s["both"], s["v2"]])
    assert ag.trained == [] and ag.smoke == ["torchvision:resnet18 (random:0) #1", "torchvision:resnet18 (random:0) #2"]
    assert "torchvision:resnet18 holds the sets synthetic, v2: its first, synthetic, is compared." in ag.sentence


def test_stats_cli_prints_the_sets(presented, tmp_path, capsys):
    from fakesegment_nb.cli import main

    assert main(["stats", "--store", str(presented), "--out", str(tmp_path / "out")]) == 0
    assert f"2 sets (synthetic, v2) x {len(FAST_LAYERS)} layers" in capsys.readouterr().out


def legend(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_dashboard_draws_one_line_and_one_bar_per_set(presented):
    from fakesegment_nb.widgets import DomainDashboard

    d = DomainDashboard(presented)
    assert list(d.set_name.options) == ["synthetic", "v2"] and d.set_name.value == "synthetic"
    profile = d.profile_table()
    assert len(profile) == 2 * len(FAST_LAYERS) and profile["c2st_lo"].notna().all()  # merged on set and layer
    assert legend(d.profile_figure())[:2] == ["synthetic", "v2"]
    from fakesegment_nb.widgets.plots import layer_distance_figure

    assert legend(layer_distance_figure(d.tables.layers, "fid")) == ["synthetic (6 images)", "v2 (7 images)"]
    # the set's own panels: pairs and channels of the chosen set
    assert set(d.pair_table()["set"]) == {"synthetic"}
    d.set_name.value = "v2"
    assert set(d.pair_table()["set"]) == {"v2"} and set(d._channel_rows()["set"]) == {"v2"}
    assert "set v2" in d.pair_html_table() and "in sets synthetic (6), v2 (7)" in d.static_html()
    assert "set v2: Effect size" in d.heatmap_figure().axes[0].get_title()


def test_gallery_ranks_one_set_chosen_by_a_dropdown(presented):
    from fakesegment_nb.widgets import Gallery

    g = Gallery(presented, method="reference", k=20)
    assert list(g.set_name.options) == ["all", "synthetic", "v2"] and len(g.shown) == 13
    g.set_name.value = "v2"
    assert len(g.shown) == 7 and all(im.startswith("v2/") for im in g.shown)
    assert "set v2 · v2/" in g._caption(g.shown[0], g.ranking().iloc[0])
    only = Gallery(presented, method="reference", k=20, set_name="synthetic")
    assert len(only.shown) == 6 and all(im.startswith("synthetic/") for im in only.shown)
    with pytest.raises(FakesegmentError, match="no synthetic set 'v3'"):
        Gallery(presented, set_name="v3")


def test_the_report_names_the_sets(presented):
    from fakesegment_nb.widgets import ReportContext

    rep = ReportContext(presented, top_k=2)
    head = rep.header().data
    assert re.search(r"synthetic sets</th><td[^>]*><code>synthetic \(6 images\), v2 \(7 images\)</code>", head)
    gap = rep.gap_profile().data
    assert "<b>What the stores share.</b> Every set of both (synthetic, v2) is compared with the same 6 real" in gap
    # one store: each table names its set (its label) and network, not the store again
    assert "synthetic -- torchvision:resnet18 (random:0, untrained)" in gap
    assert "v2 -- torchvision:resnet18" in gap and "store both" not in gap
    worst = rep.least_realistic().data
    assert "<h4>Set synthetic</h4>" in worst and "<h4>Set v2</h4>" in worst
    assert worst.count("data:image/png;base64,") == 2
    assert [g.set_name.value for g in rep.galleries()] == ["synthetic", "v2"]


def test_gap_table_and_map_change_from_two_sets_of_one_store(stores, presented):
    """The enhancer's before/after from one store equals the one from two single-set stores."""
    from fakesegment_nb.enhance import gap_table, map_change
    from fakesegment_nb.enhance.figures import plot_gap

    s = stores
    one = gap_table(presented, before_set="synthetic", after_set="v2", trained_layers=["layer2"])
    two = gap_table(s["synthetic"], s["v2"], trained_layers=["layer2"])
    pd.testing.assert_frame_equal(one, two, rtol=1e-6)
    assert list(one["trained"]) == [False, True, False] and (one["fid_after"] > one["fid_before"]).all()
    assert one.attrs == {"before_set": "synthetic", "after_set": "v2"}
    pd.testing.assert_frame_equal(gap_table(presented), one.assign(trained=False))  # default: first and last set
    with pytest.raises(FakesegmentError, match="name the after set"):
        gap_table(presented, before_set="v2")
    fig = plot_gap(one)
    assert legend(fig)[:2] == ["before: synthetic", "after: v2"]
    change = map_change(presented, method="reference")
    assert len(change) == 6 and list(change["image_after"]) == [i.replace("synthetic/", "v2/") for i in change["image"]]
    assert np.isfinite(change[["score_before", "score_after"]].to_numpy()).all()


def test_the_explorer_names_each_set(presented):
    """A store of two sets: the Explorer's domain buttons name real and each set; picking a set
    lists that set's images only."""
    from fakesegment_nb.widgets import Explorer

    ex = Explorer(presented)
    assert ex.domain._options_labels == ("all", "real", "synthetic", "v2")
    ex.domain.value = ("set", "v2")
    assert len(ex.image.options) == 7 and all(im.startswith("v2/") for im in ex.image.options)
    assert ex.image.value.startswith("v2/")
    assert f"{ex.image.value} (synthetic set v2)" in ex.main_views[0].title.value
    ex.domain.value = ("set", "synthetic")
    assert len(ex.image.options) == 6 and all(im.startswith("synthetic/") for im in ex.image.options)
    ex.domain.value = "real"
    assert all(im.startswith("real/") for im in ex.image.options)
