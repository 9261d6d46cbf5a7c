"""Widget logic without a browser: what each interaction redraws, and what a widget says when
the store lacks something."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fakesegment_nb import open_store
from fakesegment_nb.errors import FakesegmentError
from fakesegment_nb.regions import layer_box, region_drivers
from fakesegment_nb.widgets import explorer_panels as P
from fakesegment_nb.widgets import DomainDashboard, Explorer, Gallery, StoreView, banner_html
from fakesegment_nb.widgets.render import EDGE

from support import TINY_LAYERS as LAYERS, UNPAIRED, store_without_maps, tiny_store


@pytest.fixture(scope="module")
def store():
    return tiny_store()


@pytest.fixture(scope="module")
def view(store):
    return StoreView(store)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def panel(ex: Explorer, name: str):
    """A panel of the Explorer: "image", "map" (the feature map), "discrepancy", or a map
    method's overlay by its name."""
    fixed = {"image": ex.main_views[0], "map": ex.main_views[1], "discrepancy": ex.pair_views[2]}
    return fixed[name] if name in fixed else ex.map_views[ex.view.methods().index(name)]


# --------------------------------------------------------------------------------------------
# Explorer


def test_explorer_layer_channel_image_redraw_the_feature_map(view):
    ex = Explorer(view, image="synthetic/scene_001.png")
    fmap = panel(ex, "map")
    before = fmap.image.value
    assert "conv4_3" in fmap.title.value and fmap.cbar.value  # titled, with a colour bar
    ex.layer.value = "conv8_2"
    assert fmap.image.value != before
    assert "conv8_2" in fmap.title.value and "10×10 cells" in fmap.title.value
    assert ex.channel.max == view.channels("conv8_2") - 1
    before = fmap.image.value
    ex.channel.value = 7
    assert fmap.image.value != before and "channel 7" in fmap.title.value
    # the panel shows exactly the stored map, colour-mapped and stretched onto the image's display shape
    f = view.fmap("synthetic/scene_001.png", "conv8_2", 7)
    shown = pixels(fmap.image.value)
    H, Wd = view.display_shape("synthetic/scene_001.png")
    assert shown.shape[:2] == (H, Wd)
    lo, hi = np.nanmin(f), np.nanmax(f)
    if hi > lo:  # the brightest cell is drawn with the colour map's top colour
        r, c = np.unravel_index(np.nanargmax(f), f.shape)
        y, x = int((r + 0.5) * H / f.shape[0]), int((c + 0.5) * Wd / f.shape[1])
        from fakesegment_nb.widgets.render import lut

        assert np.abs(shown[y, x].astype(int) - lut("viridis")[-1]).max() <= 2
    before = panel(ex, "image").image.value
    ex.image.value = "synthetic/scene_002.png"
    assert panel(ex, "image").image.value != before
    assert ex.last_redraw_s > 0


def test_explorer_maps_alpha_and_threshold(view):
    im = "synthetic/scene_002.png"
    ex = Explorer(view, image=im, method="paired")
    ov = panel(ex, "paired")
    thr = view.threshold("paired", im)  # the maps' calibrated threshold
    assert thr is not None and ex.threshold.value == pytest.approx(thr) and ex.threshold is ex.threshold_log
    score = view.score("paired", im)
    share = float((score > thr).mean())
    assert share == pytest.approx(view.mask("paired", im).mean())
    assert f"{100 * share:.1f}% of the image differs from its real twin" in ov.title.value
    assert "differs from its real twin here" in ov.title.value and f"mask threshold (outline): {thr:.3g}" in ov.cbar.value
    # every map of the store, titled by its question
    assert [v.title.value.count(q) for v, q in zip(ex.map_views, ("looks rendered here", "unusual details here",
                                                                    "differs from its real twin here"))] == [1, 1, 1]
    edge = lambda: np.all(pixels(ov.image.value) == EDGE, axis=2)  # noqa: E731
    ex.alpha.value = 0.0  # no heat: the image itself, the mask outlined
    shown = pixels(ov.image.value)
    assert np.array_equal(shown[~edge()], view.picture(im)[~edge()])
    ex.alpha.value = 0.8
    assert (pixels(ov.image.value) != view.picture(im)).any(axis=2).mean() > 0.3  # the heat colours the image
    ex.threshold.value = 10 ** ex.threshold.min  # low threshold: more pixels flagged
    low = float((score > ex.threshold.value).mean())
    assert low > share and f"{100 * low:.1f}% of the image" in ov.title.value
    ex.threshold.value = 10 ** ex.threshold.max  # the top of the slider flags none
    assert "0.0% of the image" in ov.title.value and not edge().any()
    other = panel(ex, "reference")  # the other maps keep their calibrated thresholds
    assert f"{view.threshold('reference', im):.3g}" in other.title.value


def test_explorer_shows_each_image_at_its_own_shape(view):
    ex = Explorer(view, image="synthetic/scene_001.png", method="reference")
    ex.show_drivers()
    assert "Layers driving the reference score" in ex.drivers.value
    ex.region_x.value, ex.region_y.value = (32, 64), (32, 64)  # the middle quarter of a 128 x 128 image
    ex.image.value = UNPAIRED  # 256 x 128
    assert "another image" in ex.drivers.value  # the drivers shown were the other image's
    assert (ex.region_x.max, ex.region_y.max) == (256, 128)
    assert ex.region_x.value == (64, 128) and ex.region_y.value == (32, 64)  # the same place in the image
    assert ex.input_box == (75, 150, 75, 150)
    for v in [*ex.main_views, *ex.map_views[:2]]:
        assert pixels(v.image.value).shape[:2] == (150, 300)
    assert "its real twin is not in the store" in panel(ex, "paired").note.value
    ex.select_top_region()
    x0, x1, y0, y1 = ex.box
    assert x1 <= 256 and y1 <= 128 and "(image px)" in ex.drivers.value


def test_explorer_pair_row_only_for_pairs(view):
    ex = Explorer(view, image="synthetic/scene_000.png")
    assert ex.pair_box.layout.display is None
    d = panel(ex, "discrepancy")
    assert "discrepancy" in d.title.value and "synthetic − real" in d.cbar.value
    assert "real/scene_000.png" in ex.pair_views[1].title.value
    ex.image.value = UNPAIRED
    assert ex.pair_box.layout.display == "none"
    ex.image.value = "real/scene_001.png"  # a real image shows its synthetic twin on the left
    assert ex.pair_box.layout.display is None
    assert "synthetic/scene_001.png" in ex.pair_views[0].title.value


def test_explorer_domain_filter_and_real_images_have_no_paired_map(view):
    ex = Explorer(view, method="paired")
    ex.domain.value = "real"
    assert all(i.startswith("real/") for i in ex.image.options)
    assert "does not apply to real images" in panel(ex, "paired").note.value


def test_top_channels_follow_effect_size(view):
    ex = Explorer(view)
    assert not ex.channel_mode.disabled
    ex.layer.value = "conv9_2"
    ex.channel_mode.value = "top by effect size"
    tables, _ = view.stats()
    t = tables.channels[tables.channels["layer"] == "conv9_2"]
    want = t.iloc[np.argsort(-t["effect_size"].abs().to_numpy())]["channel"].head(3).tolist()
    assert [v for _, v in ex.top_channel.options[:3]] == want
    assert ex.channel.value == want[0]
    ex.top_channel.value = want[1]
    assert ex.channel.value == want[1] and f"channel {want[1]}" in panel(ex, "map").title.value


def test_select_top_region_and_drivers(view):
    ex = Explorer(view, image="synthetic/scene_001.png", method="paired")
    ex.select_top_region()
    x0, x1, y0, y1 = ex.input_box
    score = np.nan_to_num(view.score("paired", "synthetic/scene_001.png"))
    inside = score[y0:y1, x0:x1].mean()
    assert inside >= score.mean()  # the window sits on the high scores
    # with a map scoring the image: the map's own split of the region's score
    from fakesegment_nb.segments import attribute

    att = attribute(tiny_store(), "synthetic/scene_001.png", box=(y0, x0, y1, x1), method="paired")
    assert P.input_box(view, "synthetic/scene_001.png", ex.box) == (x0, x1, y0, y1)
    assert "Layers driving the paired score" in ex.drivers.value and f"{att.score:.3g}" in ex.drivers.value
    assert "Channels driving it" in ex.drivers.value
    shown = ex.show_drivers(top=4)
    assert shown[["layer", "channel"]].values.tolist() == att.channels.head(4)[["layer", "channel"]].values.tolist()
    # a real image is not scored by the paired map: the map-free view of the region
    ex.image.value = "real/scene_001.png"
    ex.show_drivers()
    assert "Channels departing most from its paired real image" in ex.drivers.value
    df = region_drivers(view, "synthetic/scene_001.png", ex.input_box, top=5)
    assert len(df) == 5 and (np.diff(np.abs(df["z"].to_numpy())) <= 0).all()
    # recompute the top row by hand
    row = df.iloc[0]
    r, c = layer_box(ex.input_box, view.input_size, view.layer_shape(row["layer"]))
    feats = open_store(tiny_store(), chunks=None)["layers"][row["layer"]]["features"]
    means = np.asarray(feats.isel(channel=int(row["channel"]), y=r, x=c).values, np.float64).mean(axis=(1, 2))
    ids = list(view.table.index)
    real = [i for i, im in enumerate(ids) if im.startswith("real/")]
    z = (means[ids.index("synthetic/scene_001.png")] - means[ids.index("real/scene_001.png")]) / means[real].std(ddof=1)
    assert row["z"] == pytest.approx(z, rel=1e-6)


def test_layer_box_maps_input_pixels_to_cells():
    assert layer_box((0, 300, 0, 300), (300, 300), (10, 10)) == (slice(0, 10), slice(0, 10))
    assert layer_box((150, 151, 0, 1), (300, 300), (5, 5)) == (slice(0, 1), slice(2, 3))
    with pytest.raises(FakesegmentError, match="not inside"):
        layer_box((0, 301, 0, 10), (300, 300), (5, 5))


def test_explorer_redraw_is_fast_after_the_first(view):
    """Generous bound (the machine is shared); benchmarks/bench_widgets.py reports the real figure."""
    ex = Explorer(view, image="synthetic/scene_001.png")
    times = []
    for layer in LAYERS[1:] + LAYERS[:1]:
        ex.layer.value = layer
        times.append(ex.last_redraw_s)
    assert np.median(times) < 0.5


# --------------------------------------------------------------------------------------------
# Gallery


def test_gallery_ranks_filters_and_opens_explorer(view):
    g = Gallery(view, method="reference", k=3)
    summary = view.map_summary("reference")
    assert g.shown == summary.sort_values("area", ascending=False).index[:3].tolist()
    assert len(g.grid.children) == 3
    g.sort.value = "max score"
    assert g.shown == summary.sort_values("max", ascending=False).index[:3].tolist()
    g.descending.value = False
    assert g.shown[0] == summary["max"].idxmin()
    g.filter.value = "unpaired"
    assert g.shown == [UNPAIRED]
    g.filter.value = "no such image"
    assert g.shown == [] and "no synthetic image matches" in g.message.value
    g.filter.value = ""
    target = g.shown[1]
    g.grid.children[1].children[2].click()  # the card's "open in Explorer" button
    assert g.explorer is not None and g.explorer.image.value == target
    assert g.explorer_box.children == (g.explorer,)


def test_gallery_cards_show_every_map_with_its_share(view):
    g = Gallery(view, k=4)  # ranked by the store's first map: domain
    assert g.method.value == "domain"
    assert g.shown == view.map_summary("domain").sort_values("area", ascending=False).index[:4].tolist()
    card = g.grid.children[g.shown.index(UNPAIRED)]
    caption, thumbs, _ = card.children
    heads = [t.children[0].value for t in thumbs.children]
    areas = {m: view.map_summary(m).at[UNPAIRED, "area"] for m in ("domain", "reference")}
    assert "looks rendered here" in heads[0] and f"{100 * areas['domain']:.1f}% of the image looks rendered" in heads[0]
    assert "unusual details here" in heads[1] and f"{100 * areas['reference']:.1f}% of the image has unusual" in heads[1]
    assert "differs from its real twin here" in heads[2] and "not in the store" in heads[2]
    assert f"{100 * areas['domain']:.1f}% looks rendered" in caption.value
    # each thumbnail at the image's own shape (256 x 128 drawn 300 x 150)
    for t in thumbs.children[:2]:
        assert pixels(t.children[1].value).shape[:2] == (150, 300)
    # every card's domain and reference thumbnails outline their mask exactly when it is not empty
    outlined = {"domain": 0, "reference": 0}
    for im, c in zip(g.shown, g.grid.children):
        for m, t in zip(("domain", "reference"), c.children[1].children[:2]):
            edge = np.all(pixels(t.children[1].value) == EDGE, axis=2)
            assert edge.any() == view.display_mask(m, im).any(), (im, m)
            outlined[m] += edge.any()
    assert outlined["domain"] and outlined["reference"]
    fig = g.figure()
    assert sum(bool(ax.images) for ax in fig.axes) == 4 * 3
    shares = g.share_table()
    assert list(shares.index) == g.shown and list(shares.columns) == [
        "looks rendered here (domain)", "unusual details here (reference)", "differs from its real twin here (paired)"]
    assert shares.loc[UNPAIRED, "looks rendered here (domain)"] == areas["domain"]
    assert np.isnan(shares.loc[UNPAIRED, "differs from its real twin here (paired)"])
    assert "looks rendered here (domain)" in g.static_html()


def test_gallery_sorts_by_realism_score(view):
    g = Gallery(view, method="reference", k=3)
    g.sort.value = "least realistic (images.csv)"
    tables, _ = view.stats()
    fused = tables.images[tables.images["layer"] == "fused"].set_index("image")["score"]
    ranked = view.map_summary("reference").index
    expect = fused.reindex(ranked).sort_values(ascending=False, na_position="last", kind="stable").index[:3].tolist()
    assert g.shown == expect and "realism" in g._caption(g.shown[0], g.ranking().loc[g.shown[0]])
    g.descending.value = False
    assert g.shown[0] == fused.reindex(ranked).idxmin()


def test_gallery_without_maps_says_so(tmp_path):
    g = Gallery(store_without_maps(tmp_path), k=3)
    assert "no unrealistic-detail maps" in g.message.value
    assert g.sort.disabled and g.grid.children == ()


# --------------------------------------------------------------------------------------------
# DomainDashboard


def test_dashboard_panels(view):
    d = DomainDashboard(view)
    tables, _ = view.stats()
    assert d.bars.value and d.violin.value and d.heatmap.value
    before = d.bars.value
    d.metric.value = "kid"
    assert d.bars.value != before
    rows = tables.channels[tables.channels["layer"] == LAYERS[0]]
    assert d.channel.value == int(rows.loc[rows["effect_size"].abs().idxmax(), "channel"])
    before = d.violin.value
    d.layer.value = "conv9_2"
    assert d.violin.value != before
    d.pair_sort.value = "ssim"
    d.pair_ascending.value = True
    shown = d.pair_table()
    assert shown["ssim"].dropna().is_monotonic_increasing
    d.pair_layer.value = "conv8_2"
    assert set(d.pair_table()["layer"]) == {"conv8_2"}
    assert d.pair_html.value.count("<tr>") == len(d.pair_table())  # body rows (the header row is styled)
    # the gap profile: one row per shown layer, in network order, and a figure
    prof = d.profile_table()
    assert list(prof["layer"]) == list(view.layers) and d.profile.value
    assert {"c2st_auroc", "c2st_lo", "c2st_hi", "fid_ratio", "note"} <= set(prof.columns)


# --------------------------------------------------------------------------------------------
# one domain, missing parts, banner, static views


@pytest.fixture(scope="module")
def synthetic_only(store):
    tree = open_store(store, chunks=None)
    keep = np.flatnonzero([str(d) == "synthetic" for d in tree["domain"].values.tolist()])
    return StoreView(tree.isel(image=keep))


def test_one_domain_disables_what_needs_two(synthetic_only):
    v = synthetic_only
    assert v.domains == ["synthetic"] and not v.two_domains
    ex = Explorer(v)
    assert ex.channel_mode.disabled and "only synthetic" in ex.channel_mode.tooltip
    assert ex.domain.options == ("all", "synthetic")
    assert ex.pair_box.layout.display == "none"  # the twins are not in this view
    ex.show_drivers()
    assert "need real images" in ex.drivers.value
    d = DomainDashboard(v)
    assert d.tables is None and "only synthetic" in d.why
    text = " ".join(w.value for w in d.children if hasattr(w, "value") and isinstance(w.value, str))
    assert text.count("domain statistics unavailable") == 4  # profile, bars, violins, heat map
    assert d.metric.disabled and d.bars.value == b""


def test_banner_on_every_widget(view):
    assert "Untrained weights (random:0)" in banner_html(view.attrs)
    for w in (Explorer(view), Gallery(view, k=2), DomainDashboard(view)):
        assert "Untrained weights" in w.children[0].value
    assert banner_html({**view.attrs, "weights_trained": True}) == ""


def test_static_views_embed_figures(view):
    for w in (Explorer(view), Gallery(view, k=2), DomainDashboard(view)):
        bundle = w._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert bundle["text/html"].count("data:image/png;base64,") >= 1
        assert "Untrained weights" in bundle["text/html"]


def test_unknown_layer_is_one_line_error(store):
    with pytest.raises(FakesegmentError, match="no layer fc7; it has conv4_3"):
        StoreView(store, layers=["fc7"])
