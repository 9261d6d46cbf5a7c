"""The fitted state of the maps (per-channel spread, Gaussians, memory banks) kept in the maps
group and reused by :func:`fakesegment_nb.segments.attribute`, and stores written without it."""

from __future__ import annotations

import numpy as np
import pytest

from fakesegment_nb.maps import paired_maps, read_maps, write_maps
from fakesegment_nb.segments import attribute
from fakesegment_nb.store import open_store

from probe_support import copy_store, lite0_probe


def _whole_image(store):
    h, w = (int(v) for v in open_store(store).attrs["input_size"])
    return (0, 0, h, w)


def _channel_sums_match_layer_maps(store, image, method):
    """With the whole image as the region every cell weighs the same, so each layer's channel
    contributions must add up to the mean of its stored weighted layer map (no upsampling)."""
    ds = read_maps(store, method)
    pos = [str(v) for v in ds["image"].values].index(image)
    a = attribute(store, image, box=_whole_image(store), method=method, top=10_000)
    per_layer = a.channels.groupby("layer")["contribution"].sum()
    got, want = {}, {}
    for layer in per_layer.index:
        got[layer] = float(per_layer[layer])
        want[layer] = float(np.mean(ds[f"layer_{layer}"].values[pos], dtype=np.float64))
    return got, want


def test_attribute_uses_the_spread_the_paired_maps_used(tmp_path, monkeypatch):
    # more real images than the spread is estimated from (today 256; here 4 of the probe's 8):
    # the maps draw one random sample of real images per layer from one generator, and
    # attribution must divide by the very same spread
    import fakesegment_nb.maps as maps_mod

    _, src = lite0_probe()
    store = copy_store(src, tmp_path)
    monkeypatch.setattr(maps_mod, "MAX_REAL_FOR_SPREAD", 4)
    res = paired_maps(store)
    # the cap took effect: the spread, and so the maps, differ from those of all 8 real images
    assert not np.allclose(res.dataset["score"].values, read_maps(src, "paired")["score"].values, equal_nan=True)
    write_maps(store, res)
    thr = res.dataset["threshold"].values
    image = str(res.dataset["image"].values[int(np.flatnonzero(np.isfinite(thr))[0])])
    got, want = _channel_sums_match_layer_maps(store, image, "paired")
    assert set(got) == {"p2", "p3", "p4"}
    for layer in got:
        assert got[layer] == pytest.approx(want[layer], rel=1e-4), layer
