"""The bundled probe set: files, determinism, kinds, and that masks mark what was changed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fakesegment_nb.errors import FakesegmentError
from fakesegment_nb.probe import HELDOUT_KINDS, KINDS, TUNING_KINDS, check_kinds, make_probe


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _load(p):
    return np.asarray(Image.open(p)).astype(np.float64)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    make_probe(out, n=6, seed=3, size=160)
    return out


def test_layout_sizes_and_stems(probe):
    stems = {d: sorted(p.stem for p in (probe / d).glob("*.png")) for d in ("real", "synthetic", "masks")}
    assert stems["real"] == stems["synthetic"] == stems["masks"] == [f"scene_{i:03d}" for i in range(6)]
    for s in stems["real"]:
        assert _load(probe / "real" / f"{s}.png").shape == (160, 160, 3)
        assert _load(probe / "synthetic" / f"{s}.png").shape == (160, 160, 3)
        m = _load(probe / "masks" / f"{s}.png")
        assert m.shape == (160, 160) and set(np.unique(m)) <= {0.0, 255.0}
    meta = json.loads((probe / "probe.json").read_text())
    assert meta["seed"] == 3 and meta["n"] == 6 and len(meta["images"]) == 6


def test_masks_match_recorded_regions_and_changes(probe):
    meta = json.loads((probe / "probe.json").read_text())
    inside, outside = [], []
    for im in meta["images"]:
        m = _load(probe / "masks" / f"{im['stem']}.png") > 0
        assert 1 <= len(im["regions"]) <= 3
        assert m.sum() == sum(r["area"] for r in im["regions"])  # regions do not overlap
        for r in im["regions"]:
            y0, x0, y1, x1 = r["box"]
            assert m[y0:y1, x0:x1].any() and r["kind"] in KINDS
        real = _load(probe / "real" / f"{im['stem']}.png")
        syn = _load(probe / "synthetic" / f"{im['stem']}.png")
        diff = np.abs(real - syn).mean(2)
        inside.append(diff[m].mean())
        outside.append(diff[~m].mean())
    # the unrealistic details change the image much more than the global renderer look does
    assert np.mean(inside) > 3 * np.mean(outside)
    assert np.mean(outside) > 0.5  # ... which is not nothing (grain, drift, misregistration)


def test_synthetic_is_too_clean(probe):
    """No sensor grain: less high-frequency energy than the real twin outside the masks."""
    from scipy import ndimage as ndi

    ratios = []
    for p in sorted((probe / "real").glob("*.png")):
        real = _load(p).mean(2)
        syn = _load(probe / "synthetic" / p.name).mean(2)
        m = _load(probe / "masks" / p.name) > 0
        hf = lambda a: np.abs(a - ndi.uniform_filter(a, 3))[~m].mean()
        ratios.append(hf(syn) / hf(real))
    assert np.median(ratios) < 0.8


def test_deterministic_for_a_seed(tmp_path):
    make_probe(tmp_path / "a", n=3, seed=5, size=96)
    make_probe(tmp_path / "b", n=3, seed=5, size=96)
    make_probe(tmp_path / "c", n=3, seed=6, size=96)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_kind_selection(tmp_path):
    assert check_kinds("tuning") == TUNING_KINDS and check_kinds("heldout") == HELDOUT_KINDS
    assert check_kinds("banding, aliasing") == ("banding", "aliasing")
    make_probe(tmp_path, n=4, seed=0, size=128, kinds="heldout")
    meta = json.loads((tmp_path / "probe.json").read_text())
    used = {r["kind"] for im in meta["images"] for r in im["regions"]}
    assert used and used <= set(HELDOUT_KINDS)
    with pytest.raises(FakesegmentError, match="unknown artifact kind"):
        check_kinds("lens_flare")


def test_cli_probe(tmp_path):
    cmd = [sys.executable, "-m", "fakesegment_nb.cli", "probe", "--out", str(tmp_path / "p"), "--n", "2",
           "--seed", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "p" / "masks").glob("*.png"))) == 2
    bad = subprocess.run(cmd + ["--kinds", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown artifact kind" in bad.stderr and "Traceback" not in bad.stderr
