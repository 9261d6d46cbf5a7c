"""Evaluation: the ranking metrics against brute force, bad masks, and the quality bars."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fakesegment_nb.errors import FakesegmentError, ParameterError
from fakesegment_nb.evaluate import average_precision, auroc, evaluate, iou, load_masks
from fakesegment_nb.resample import resize_map

from support import UNPAIRED, small_probe, tiny_store, unpaired_store

FS = [sys.executable, "-m", "fakesegment_nb.cli"]


def _auroc_brute(s, y):
    pos, neg = s[y], s[~y]
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return (gt + 0.5 * eq) / (pos.size * neg.size)


def _ap_brute(s, y):
    """Precision at every distinct threshold, weighted by the recall it adds."""
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(s)[::-1]:
        pred = s >= t
        tp = (pred & y).sum()
        recall = tp / y.sum()
        ap += (recall - prev_recall) * tp / pred.sum()
        prev_recall = recall
    return ap


@pytest.mark.parametrize("seed", range(6))
def test_auroc_and_ap_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.random(n) < rng.uniform(0.1, 0.7)
    y[0], y[1] = True, False
    s = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), int(rng.integers(0, 3)))  # ties
    assert auroc(s, y) == pytest.approx(_auroc_brute(s, y), abs=1e-12)
    assert average_precision(s, y) == pytest.approx(_ap_brute(s, y), abs=1e-12)


def test_metric_edge_cases():
    assert auroc([1, 2, 3], [1, 1, 0]) == 0.0
    assert auroc([3, 2, 1], [1, 1, 0]) == 1.0
    assert auroc([1, 1, 1], [1, 0, 1]) == 0.5
    assert np.isnan(auroc([1, 2], [1, 1])) and np.isnan(average_precision([1, 2], [0, 0]))
    assert average_precision([3, 2, 1], [1, 1, 0]) == 1.0
    assert iou([1, 1, 0], [1, 0, 0]) == 0.5 and np.isnan(iou([0], [0]))
    with pytest.raises(ValueError):
        auroc([1, 2], [1])


def test_quality_bars_on_the_small_probe():
    """DESIGN.md section 6 / issue 4 on the seeded random weights CI has (seed-0 probe)."""
    probe, store = small_probe()
    ev = evaluate(store, probe / "masks")
    t = ev.table
    assert t.loc["paired", "images"] == 10
    assert t.loc["paired", "auroc"] >= 0.90
    assert t.loc["paired", "auroc"] >= t.loc["pixel_absdiff", "auroc"] + 0.05
    assert t.loc["reference", "auroc"] >= 0.55
    for name in ("paired", "reference", "domain", "pixel_absdiff", "pixel_1-ssim"):
        assert 0 <= t.loc[name, "ap"] <= 1 and 0 <= t.loc[name, "iou"] <= 1
    assert t.loc["paired", "iou"] > 0.1  # the calibrated masks find something
    assert not ev.notes


def test_masks_of_another_size_are_resized_and_missing_ones_skipped(tmp_path):
    probe, store = small_probe()
    masks = tmp_path / "masks"
    shutil.copytree(probe / "masks", masks)
    (masks / "scene_000.png").unlink()
    big = Image.open(masks / "scene_001.png").resize((640, 480), Image.NEAREST)
    big.save(masks / "scene_001.png")
    truth, notes = load_masks(store, masks)
    assert "synthetic/scene_000.png" not in truth and len(truth) == 9
    assert truth["synthetic/scene_001.png"].shape == (300, 300)
    text = " ".join(notes)
    assert "1 synthetic image(s) have no mask" in text and "synthetic/scene_000.png" in text
    assert "resized" in text and "640x480 -> 320x320" in text
    ev = evaluate(store, masks, baselines=False)
    assert ev.table.loc["paired", "images"] == 9
    assert any("no mask" in n for n in ev.notes)


def test_no_matching_masks(tmp_path):
    _, store = small_probe()
    with pytest.raises(FakesegmentError, match="no mask"):
        load_masks(store, tmp_path)
    with pytest.raises(FakesegmentError, match="does not exist"):
        load_masks(store, tmp_path / "nowhere")


def test_store_without_maps(tmp_path):
    store = unpaired_store()
    with pytest.raises(FakesegmentError, match="no maps to evaluate"):
        evaluate(store, tmp_path)
    proc = subprocess.run([*FS, "evaluate", "--store", str(store), "--masks", str(tmp_path), "--json",
                           str(tmp_path / "e.json")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "fakesegment maps" in proc.stderr and not (tmp_path / "e.json").exists()


def test_cli_evaluate_json(tmp_path):
    probe, store = small_probe()
    out = tmp_path / "eval.json"
    proc = subprocess.run([*FS, "evaluate", "--store", str(store), "--masks", str(probe / "masks"), "--json",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pixel_1-ssim" in proc.stdout and "paired" in proc.stdout
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"paired", "reference", "domain"}
    assert set(data["baselines"]) == {"pixel_absdiff", "pixel_1-ssim"}
    for row in [*data["methods"].values(), *data["baselines"].values()]:
        assert {"auroc", "ap", "ap_pooled", "iou", "iou_mean", "images"} <= set(row)


# --------------------------------------------------------------------------------------------
# at the original resolution (the tiny store holds a 2:1 image, UNPAIRED, whose mask is 256 x 128)


def test_resize_map_keeps_nan_cells_and_masks():
    a = np.tile(np.arange(4, dtype=np.float32), (2, 1))  # a ramp along x
    up = resize_map(a, (4, 8))
    assert up.shape == (4, 8) and up.dtype == np.float32
    assert np.allclose(up[:, 1:7], [0.25, 0.75, 1.25, 1.75, 2.25, 2.75])  # pixel centres aligned, bilinear
    assert resize_map(a, (2, 4)) is a
    b = a.copy()
    b[:, 0] = np.nan  # a column not scored stays not scored; the rest is finite
    nb = resize_map(b, (4, 8))
    assert np.isnan(nb[:, :2]).all() and np.isfinite(nb[:, 2:]).all()
    assert np.isnan(resize_map(np.full((3, 3), np.nan), (5, 7))).all()
    m = np.array([[True, False], [False, True]])
    assert resize_map(m, (4, 6)).dtype == bool and resize_map(m, (4, 6)).sum() == 12  # nearest


def test_evaluate_at_the_original_resolution(tmp_path, monkeypatch):
    store = tiny_store()
    masks = store.parent / "probe" / "masks"
    truth, notes = load_masks(store, masks, resolution="original")
    assert truth[UNPAIRED].shape == (128, 256) and truth["synthetic/scene_000.png"].shape == (128, 128)
    assert load_masks(store, masks)[0][UNPAIRED].shape == (300, 300)  # input: squashed into the network input
    ev = evaluate(store, masks, baselines=False, resolution="original")
    assert ev.resolution == "original" and ev.to_dict()["resolution"] == "original"
    per = ev.per_image.set_index(["name", "image"])
    assert tuple(per.loc[("reference", UNPAIRED), ["height", "width"]]) == (128, 256)
    # the map resized onto the mask with scikit-image, its calibrated threshold applied there
    from sklearn.metrics import roc_auc_score
    from skimage.transform import resize

    from fakesegment_nb.maps import read_maps

    ds = read_maps(store, "reference")
    i = [str(v) for v in ds["image"].values].index(UNPAIRED)
    s = resize(np.asarray(ds["score"].values[i], np.float32), (128, 256), order=1, preserve_range=True)
    t = truth[UNPAIRED]
    assert per.loc[("reference", UNPAIRED), "auroc"] == pytest.approx(roc_auc_score(t.ravel(), s.ravel()), abs=1e-6)
    pred = s > float(ds["threshold"].values[i])
    assert per.loc[("reference", UNPAIRED), "iou"] == pytest.approx((pred & t).sum() / (pred | t).sum(), abs=1e-6)
    # paired: the unpaired image is not scored; the three pairs are
    assert ev.table.loc["paired", "images"] == 3 and ev.table.loc["reference", "images"] == 4
    # more pixels than ap_pooled sorts at once: every k-th pixel, said in the notes
    monkeypatch.setattr(sys.modules["fakesegment_nb.evaluate"], "POOLED_PIXELS", 40_000)
    strided = evaluate(store, masks, methods=["reference"], baselines=False, resolution="original")
    assert any("ap_pooled over one pixel in 3 of each image" in n for n in strided.notes)
    assert strided.table.loc["reference", "auroc"] == ev.table.loc["reference", "auroc"]
    with pytest.raises(ParameterError, match="resolution must be one of input, original"):
        evaluate(store, masks, resolution="native")


def test_cli_evaluate_original_resolution(tmp_path):
    store = tiny_store()
    out = tmp_path / "eval.json"
    proc = subprocess.run([*FS, "evaluate", "--store", str(store), "--masks", str(store.parent / "probe" / "masks"),
                           "--json", str(out), "--resolution", "original"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "scored at original resolution" in proc.stdout
    data = json.loads(out.read_text())
    assert data["resolution"] == "original" and "own resolution" in data["resolution_description"]
    assert set(data["methods"]) == {"domain", "reference", "paired"}
    bad = subprocess.run([*FS, "evaluate", "--store", str(store), "--masks", str(tmp_path), "--json",
                          str(tmp_path / "x.json"), "--resolution", "native"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "invalid choice: 'native'" in bad.stderr and not (tmp_path / "x.json").exists()
