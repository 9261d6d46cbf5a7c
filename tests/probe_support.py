"""Shared, built-once data for the probe / maps / evaluate tests.

One small probe (10 pairs, seed 0 -- the tuning seed) extracted with the default model and the
seeded random weights CI can use, with maps of both methods; the same kind of probe (8 pairs)
extracted with efficientnet_lite0 and its packaged ImageNet weights, with maps; and a tiny store
without pairs.
Each is built once per test process (lru_cache) in a temporary folder.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

SMALL_N = 10
SEED = 0
MODEL = "ssd300_vgg16"
WEIGHTS = "random:0"
LITE0_N = 8


@lru_cache(maxsize=None)
def small_probe() -> tuple[Path, Path]:
    """(probe folder, store with paired and reference maps)."""
    from fakesegment_nb.extract import extract
    from fakesegment_nb.maps import compute_maps
    from fakesegment_nb.probe import make_probe

    root = Path(tempfile.mkdtemp(prefix="fakesegment-probe-"))
    probe = root / "probe"
    make_probe(probe, n=SMALL_N, seed=SEED)
    store = root / "store.zarr"
    extract(probe / "real", probe / "synthetic", store, model=MODEL, weights=WEIGHTS, progress=False)
    compute_maps(store, "all")
    return probe, store


@lru_cache(maxsize=None)
def lite0_probe() -> tuple[Path, Path]:
    """(probe folder, efficientnet_lite0 store, trained weights, with paired and reference maps)."""
    from fakesegment_nb.extract import extract
    from fakesegment_nb.maps import compute_maps
    from fakesegment_nb.probe import make_probe

    root = Path(tempfile.mkdtemp(prefix="fakesegment-lite0-"))
    probe = root / "probe"
    make_probe(probe, n=LITE0_N, seed=SEED, kinds="tuning")
    store = root / "store.zarr"
    extract(probe / "real", probe / "synthetic", store, model="efficientnet_lite0", weights="auto", progress=False)
    compute_maps(store, "all")
    return probe, store


@lru_cache(maxsize=None)
def unpaired_store() -> Path:
    """3 real and 3 synthetic images with no common stem, no maps.

    ssd300's reference-map layers only: ssdlite's random activations underflow float16 (all zeros).
    """
    from fakesegment_nb.extract import extract

    root = Path(tempfile.mkdtemp(prefix="fakesegment-unpaired-"))
    rng = np.random.default_rng(1)
    for dom in ("real", "synthetic"):
        (root / dom).mkdir()
        for i in range(3):
            a = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
            Image.fromarray(a).save(root / dom / f"{dom}_{i}.png")
    store = root / "store.zarr"
    extract(root / "real", root / "synthetic", store, model="ssd300_vgg16", layers=["fc7", "conv8_2"],
            weights="random:0", progress=False)
    return store


def copy_store(store: Path, dest: Path) -> Path:
    out = dest / store.name
    shutil.copytree(store, out)
    return out
