"""A severity ladder on the trained network: the same real crops against synthetic sets that
depart further and further from them (``make_probe(severity=...)``)."""

from __future__ import annotations

import numpy as np
import pytest

from fakesegment_nb.extract import extract
from fakesegment_nb.probe import make_probe
from fakesegment_nb.stats import layer_table

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
