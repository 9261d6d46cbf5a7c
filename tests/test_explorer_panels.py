"""The Explorer's panel functions without ipywidgets: a StoreView and a Selection in, panels,
figures, tables and HTML out."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fakesegment_nb import open_store
from fakesegment_nb.regions import region_drivers
from fakesegment_nb.segments import attribute
from fakesegment_nb.widgets import explorer_panels as P
from fakesegment_nb.widgets.render import colorize, upsample
from fakesegment_nb.widgets.storeview import StoreView

from support import REPO, UNPAIRED, tiny_store

SYN, REAL = "synthetic/scene_001.png", "real/scene_001.png"
CYAN = (0, 229, 255)  # draw_box's colour


@pytest.fixture(scope="module")
def view():
    return StoreView(tiny_store())


def test_the_panel_functions_import_and_run_without_ipywidgets():
    code = textwrap.dedent(f"""
        import sys
        from fakesegment_nb.widgets import explorer_panels as P
        from fakesegment_nb.widgets.storeview import StoreView

        v = StoreView({str(tiny_store())!r})
        sel = P.Selection({SYN!r}, "conv8_2", 3, "paired", 0.5, 0.6, (10, 60, 20, 70))
        assert len(P.main_panels(v, sel)) == 3 and len(P.pair_panels(v, sel)) == 3
        P.explorer_figure(v, sel)
        html, df = P.drivers_html(v, sel)
        assert "Layers driving the paired score" in html and len(df)
        assert "ipywidgets" not in sys.modules, "the panel functions pulled in ipywidgets"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_main_panels_draw_the_image_box_stored_map_and_overlay(view):
    thr = view.threshold("paired", SYN)
    sel = P.Selection(SYN, "conv8_2", 7, "paired", thr, 0.0, (10, 60, 20, 70))
    image, fmap, over = P.main_panels(view, sel)
    rgb = view.rgb(SYN)
    # the image with the region outlined (top-left corner in the box colour), untouched elsewhere
    assert tuple(image.rgb[20, 10]) == CYAN and np.array_equal(image.rgb[100:, 100:], rgb[100:, 100:])
    assert image.title == f"{SYN} (synthetic)"
    # the stored feature map, colour-mapped over its finite range and upsampled to the input size
    f = view.fmap(SYN, "conv8_2", 7)
    lo, hi = P.finite_range(f)
    fmin, fmax = float(np.nanmin(f)), float(np.nanmax(f))
    assert (lo, hi) == ((fmin, fmax) if fmax > fmin else (fmin - 0.5, fmax + 0.5))
    assert np.array_equal(fmap.rgb, upsample(colorize(f, "viridis", lo, hi), view.input_size))
    assert (fmap.cbar.lo, fmap.cbar.hi) == (lo, hi) and "10×10 cells" in fmap.title and "channel 7" in fmap.title
    # the overlay: the share of locations scoring above the threshold; alpha 0 is the image itself
    share = float((view.score("paired", SYN) > thr).mean())
    assert f"{100 * share:.1f}% of the image" in over.title
    if share > 0:
        assert np.array_equal(over.rgb, rgb) and over.cbar.lo == pytest.approx(thr)


def test_overlay_says_what_it_cannot_show(view):
    no_maps = P.main_panels(view, P.Selection(SYN, "conv4_3", 0, None))[2]
    assert no_maps.note == P.NO_MAPS
    real = P.main_panels(view, P.Selection(REAL, "conv4_3", 0, "paired", 0.5))[2]
    assert "does not apply to real images" in real.note
    top = float(np.nanmax(view.score("paired", SYN)))
    above = P.main_panels(view, P.Selection(SYN, "conv4_3", 0, "paired", top * 2))[2]
    assert "0.0% of the image" in above.title and "lower the threshold" in above.note and above.cbar is None


def test_pair_panels_and_their_discrepancy(view):
    syn, real, diff = P.pair_panels(view, P.Selection(SYN, "conv9_2", 2))
    assert syn.title == f"synthetic: {SYN}" and real.title == f"real: {REAL}"
    d = view.fmap(SYN, "conv9_2", 2) - view.fmap(REAL, "conv9_2", 2)
    assert f"mean |Δ| {np.nanmean(np.abs(d)):.3g}" in diff.title
    assert diff.cbar.hi == pytest.approx(np.nanmax(np.abs(d))) and diff.cbar.lo == -diff.cbar.hi
    flipped = P.pair_panels(view, P.Selection(REAL, "conv9_2", 2))  # a real image: its twin still left
    assert [p.title for p in flipped] == [syn.title, real.title, diff.title]
    assert P.pair_panels(view, P.Selection(UNPAIRED, "conv9_2", 2)) is None


def test_figure_and_a_missing_source_image(view):
    sel = P.Selection(SYN, "conv4_3", 1, "reference", 1.0)
    fig = P.explorer_figure(view, sel)
    assert SYN in fig.get_suptitle() and "channel 1" in fig.get_suptitle()
    assert sum(bool(ax.images) for ax in fig.axes) == 6  # image, map, overlay, synthetic, real, discrepancy
    assert P.status_html(view, sel) == ""
    moved = StoreView(tiny_store())
    moved.table = moved.table.copy()
    moved.table.loc[REAL, "path"] = "/nowhere/scene_001.png"
    assert "source image not found: /nowhere/scene_001.png" in P.status_html(moved, sel)
    grey = P.pair_panels(moved, sel)[1].rgb
    assert (grey == 240).all()  # a placeholder in its place


def test_overlay_threshold_and_top_region(view):
    thr, lo, hi = P.overlay_threshold(view, "paired", SYN)
    assert thr == pytest.approx(view.threshold("paired", SYN))
    assert (lo, hi) == pytest.approx((np.log10(thr) - 2, np.log10(thr) + 4))
    x0, x1, y0, y1 = P.top_region(view, "paired", SYN, size=16)
    assert (x1 - x0, y1 - y0) == (16, 16)
    s = np.nan_to_num(view.score("paired", SYN))
    windows = np.lib.stride_tricks.sliding_window_view(s, (16, 16)).mean(axis=(2, 3))
    assert s[y0:y1, x0:x1].mean() == pytest.approx(windows.max())
    assert P.top_region(view, "paired", REAL) is None  # the paired map does not score real images


def test_top_channels_follow_the_effect_size(view):
    options, why = P.top_channels(view, "conv9_2", n=5)
    t = view.stats()[0].channels
    t = t[t["layer"] == "conv9_2"]
    want = t.iloc[np.argsort(-t["effect_size"].abs().to_numpy(), kind="stable")]["channel"].head(5).tolist()
    assert why is None and [c for _, c in options] == want
    assert options[0][0].startswith(f"ch {want[0]} (d = ")
    tree = open_store(tiny_store(), chunks=None)
    one = StoreView(tree.isel(image=[i for i, d in enumerate(tree["domain"].values.tolist()) if d == "synthetic"]))
    assert P.top_channels(one, "conv9_2") == ([], one.stats_missing()) and "only synthetic" in one.stats_missing()


def test_drivers_split_the_score_or_rank_departures(view):
    box = (20, 60, 30, 70)
    html, df = P.drivers_html(view, P.Selection(SYN, "conv4_3", 0, "paired", 0.5, 0.6, box), top=4)
    att = attribute(tiny_store(), SYN, box=(30, 20, 70, 60), method="paired")
    assert "Layers driving the paired score in x 20–60, y 30–70" in html and f"{att.score:.3g}" in html
    assert df[["layer", "channel"]].values.tolist() == att.channels.head(4)[["layer", "channel"]].values.tolist()
    html, df = P.drivers_html(view, P.Selection(REAL, "conv4_3", 0, "paired", 0.5, 0.6, box), top=4)
    assert "Channels departing most from its paired real image" in html
    assert df.equals(region_drivers(view, REAL, box, top=4))
