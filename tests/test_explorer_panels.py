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
from fakesegment_nb.resample import resize_map
from fakesegment_nb.widgets import explorer_panels as P
from fakesegment_nb.widgets.mappanels import map_question
from fakesegment_nb.widgets.render import EDGE, colorize, heat_overlay, heat_range, upsample
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
        assert len(P.main_panels(v, sel)) == 2 and len(P.pair_panels(v, sel)) == 3
        assert [p.title.split(" · ")[0] for p in P.map_panels(v, sel)] == [
            "looks rendered here", "unusual details here", "differs from its real twin here"]
        P.explorer_figure(v, sel)
        html, df = P.drivers_html(v, sel)
        assert "Layers driving the paired score" in html and len(df)
        assert "ipywidgets" not in sys.modules, "the panel functions pulled in ipywidgets"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_main_panels_draw_the_image_box_and_stored_map(view):
    sel = P.Selection(SYN, "conv8_2", 7, "paired", 1.0, 0.0, (10, 60, 20, 70))
    image, fmap = P.main_panels(view, sel)
    # the image at its display shape (128 px image, 300 px input: drawn at 300 px), the region
    # (in image pixels) outlined: its top-left corner at 300/128 of its image coordinates
    rgb = view.picture(SYN)
    assert rgb.shape[:2] == view.display_shape(SYN) == (300, 300)
    y, x = int(20 * 300 / 128), int(10 * 300 / 128)
    assert tuple(image.rgb[y, x]) == CYAN and np.array_equal(image.rgb[200:, 200:], rgb[200:, 200:])
    assert image.title == f"{SYN} (synthetic)" and image.extent == (0, 128, 128, 0)
    # the stored feature map, colour-mapped over its finite range, stretched onto the display shape
    f = view.fmap(SYN, "conv8_2", 7)
    lo, hi = P.finite_range(f)
    fmin, fmax = float(np.nanmin(f)), float(np.nanmax(f))
    assert (lo, hi) == ((fmin, fmax) if fmax > fmin else (fmin - 0.5, fmax + 0.5))
    assert np.array_equal(fmap.rgb, upsample(colorize(f, "viridis", lo, hi), view.display_shape(SYN)))
    assert (fmap.cbar.lo, fmap.cbar.hi) == (lo, hi) and "10×10 cells" in fmap.title and "channel 7" in fmap.title


def test_map_panels_show_every_map_titled_by_its_question(view):
    thr = view.threshold("reference", SYN)
    sel = P.Selection(SYN, "conv8_2", 7, "reference", thr * 0.2, 0.0, (10, 60, 20, 70))
    panels = P.map_panels(view, sel)
    assert view.methods() == ["domain", "reference", "paired"]
    for p, m in zip(panels, view.methods()):
        assert p.title.startswith(f"{map_question(m)} · {m}\n")
        outline = np.all(p.rgb == EDGE, axis=2)
        assert np.array_equal(p.rgb[~outline], view.picture(SYN)[~outline])  # alpha 0: no heat
    # the selected map at the selection's threshold, the others at their calibrated ones
    for p, m, t in zip(panels, view.methods(), (None, thr * 0.2, None)):
        t = view.threshold(m, SYN) if t is None else t
        share = float((view.score(m, SYN) > t).mean())
        assert f"{100 * share:.1f}% of the image" in p.title and p.cbar.mark == pytest.approx(t)
    # the domain map's share is the stored mask's area fraction
    assert f"{100 * view.mask('domain', SYN).mean():.1f}% of the image looks rendered" in panels[0].title


def test_maps_are_drawn_on_the_image_at_its_own_shape(view):
    """The 2:1 image: the network saw it squashed into 300 x 300; the panels draw it 300 x 150."""
    assert view.original_size(UNPAIRED) == (128, 256) and view.display_shape(UNPAIRED) == (150, 300)
    # the threshold slider moved to the image's median score (at the calibrated threshold the
    # random-weights fixture's mask of this image may be empty: nothing to outline)
    thr = float(np.nanmedian(view.score("reference", UNPAIRED)))
    assert view.display_mask("reference", UNPAIRED).any() == (view.display_score("reference", UNPAIRED) > view.threshold("reference", UNPAIRED)).any()
    sel = P.Selection(UNPAIRED, "conv9_2", 0, "reference", thr, 1.0, (0, 256, 0, 128))
    image, fmap = P.main_panels(view, sel)
    domain, reference, paired = P.map_panels(view, sel)
    for p in (image, fmap, domain, reference):
        assert p.rgb.shape[:2] == (150, 300) and p.extent == (0, 256, 128, 0) and "image px" in p.xlabel
    assert "real twin is not in the store" in paired.note
    # the heat map is the stored map resized onto the image, the outline its mask there
    shown = view.display_score("reference", UNPAIRED)
    assert np.array_equal(shown, resize_map(view.score("reference", UNPAIRED), (150, 300)))
    edge = np.all(reference.rgb == EDGE, axis=2)
    mask = shown > thr
    assert mask.any() and not mask.all()
    assert edge.any() and not (edge & ~mask).any()  # the outline lies on the mask's rim


def test_heat_overlay_keeps_a_flooded_mask_readable():
    """A mask over 98% of the image: outlined along its rim and the image border, not filled; the
    heat shows where within it the score is highest, the low scores leave the image visible."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (60, 120, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:60, :120]
    score = (xx / 119.0).astype(np.float32)  # rises left to right
    mask = np.ones((60, 120), bool)
    mask[20:30, 2:12] = False  # a small hole: 98.6% covered
    lo, hi, log = heat_range(score)
    out = heat_overlay(rgb, score, mask, lo, hi, alpha=0.8)
    edge = np.all(out == EDGE, axis=2)
    assert edge[0].all() and edge[-1].all() and edge[:, -1].all()  # the border closes the outline
    assert edge[19, 5] and edge[30, 5] and not edge[25, 6] and not edge[40, 60]  # the hole's rim; inside not
    assert edge.mean() < 0.15  # an outline, not a fill
    inner = ~edge
    low, high = inner & (xx >= 2) & (xx <= 3), inner & (xx >= 115)
    assert np.abs(out[low].astype(int) - rgb[low]).max() <= 4  # the image, nearly untouched, where the score is low
    assert np.abs(out[high].astype(int) - rgb[high]).mean() > 20  # coloured where it is high
    assert heat_range(np.full((4, 4), 3.0))[:2] == pytest.approx((3.0, 3.003))


def test_overlay_says_what_it_cannot_show(view):
    no_maps = P.map_panels(view, P.Selection(SYN, "conv4_3", 0, None))
    assert len(no_maps) == 1 and no_maps[0].note == P.NO_MAPS
    real = P.map_panels(view, P.Selection(REAL, "conv4_3", 0, "paired", 0.5))[2]
    assert "does not apply to real images" in real.note
    top = float(np.nanmax(view.score("paired", SYN)))
    above = P.map_panels(view, P.Selection(SYN, "conv4_3", 0, "paired", top * 2))[2]
    assert "0.0% of the image" in above.title and f"its maximum {top:.3g} ≤ threshold" in above.title
    assert not np.all(above.rgb == EDGE, axis=2).any()  # nothing outlined


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
    # image, feature map | domain, reference, paired | synthetic, real, discrepancy
    assert sum(bool(ax.images) for ax in fig.axes) == 8
    assert P.status_html(view, sel) == ""
    moved = StoreView(tiny_store())
    moved.table = moved.table.copy()
    moved.table.loc[REAL, "path"] = "/nowhere/scene_001.png"
    assert "source image not found: /nowhere/scene_001.png" in P.status_html(moved, sel)
    moved._picture.clear()
    grey = P.pair_panels(moved, sel)[1].rgb
    assert (grey == 240).all() and grey.shape[:2] == moved.display_shape(REAL)  # a placeholder in its place


def test_overlay_threshold_and_top_region(view):
    thr, lo, hi, log = P.overlay_threshold(view, "paired", SYN)
    top = float(np.nanmax(view.score("paired", SYN)))
    assert log and thr == pytest.approx(view.threshold("paired", SYN))
    assert (lo, hi) == pytest.approx((np.log10(thr) - 2, np.log10(max(10 * thr, 1.5 * top))))
    # a map with negative scores (log-odds, say) gets a linear slider over its scores and threshold
    shifted = StoreView(tiny_store())
    shifted.score = lambda m, im: view.score(m, im) - 5.0
    shifted.threshold = lambda m, im=None: -1.0
    thr, lo, hi, log = P.overlay_threshold(shifted, "paired", SYN)
    s = view.score("paired", SYN) - 5.0
    assert not log and thr == -1.0 and lo < min(np.nanmin(s), -1.0) and hi > max(np.nanmax(s), -1.0)
    # the top window, found on the input grid, returned in image pixels
    box = P.top_region(view, "paired", SYN, size=16)
    X0, X1, Y0, Y1 = P.input_box(view, SYN, box)
    s = np.nan_to_num(view.score("paired", SYN))
    windows = np.lib.stride_tricks.sliding_window_view(s, (16, 16)).mean(axis=(2, 3))
    y, x = np.unravel_index(np.argmax(windows), windows.shape)
    assert X0 <= x and x + 16 <= X1 and Y0 <= y and y + 16 <= Y1 and X1 - X0 <= 19 and Y1 - Y0 <= 19
    assert box == P.image_box(view, SYN, (x, x + 16, y, y + 16))
    assert P.top_region(view, "paired", REAL) is None  # the paired map does not score real images


def test_boxes_between_image_and_input_pixels(view):
    assert P.input_box(view, UNPAIRED, (0, 256, 0, 128)) == (0, 300, 0, 300)
    assert P.input_box(view, UNPAIRED, (128, 129, 64, 65)) == (150, 152, 150, 153)
    assert P.image_box(view, UNPAIRED, (150, 152, 150, 153)) == (128, 130, 64, 66)
    assert P.input_box(view, UNPAIRED, (255, 256, 127, 128)) == (298, 300, 297, 300)


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
    box = (20, 60, 30, 70)  # image pixels
    X0, X1, Y0, Y1 = P.input_box(view, SYN, box)
    html, df = P.drivers_html(view, P.Selection(SYN, "conv4_3", 0, "paired", 0.5, 0.6, box), top=4)
    att = attribute(tiny_store(), SYN, box=(Y0, X0, Y1, X1), method="paired")
    assert ("Layers driving the paired score (differs from its real twin here) in x 20–60, y 30–70 (image px)"
            in html and f"{att.score:.3g}" in html)
    assert df[["layer", "channel"]].values.tolist() == att.channels.head(4)[["layer", "channel"]].values.tolist()
    html, df = P.drivers_html(view, P.Selection(REAL, "conv4_3", 0, "paired", 0.5, 0.6, box), top=4)
    assert "Channels departing most from its paired real image" in html
    assert df.equals(region_drivers(view, REAL, P.input_box(view, REAL, box), top=4))
