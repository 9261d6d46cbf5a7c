"""A tiny store with statistics and maps, built once per test session (shared by the notebook,
widget and browser tests): 3 probe pairs at 128 px plus one unpaired synthetic image,
SSD300-VGG16 with random weights, three layers (fc7's 1024 channels would triple the
statistics time)."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

LAYERS = ["conv4_3", "conv8_2", "conv9_2"]
UNPAIRED = "synthetic/unpaired_extra.png"
REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


@functools.cache
def tiny_root() -> Path:
    from fakesegment_nb.extract import extract
    from fakesegment_nb.maps import compute_maps
    from fakesegment_nb.probe import make_probe
    from fakesegment_nb.stats import write_stats

    root = Path(tempfile.mkdtemp(prefix="fakesegment-nb-tests-"))
    probe = root / "probe"
    make_probe(probe, n=3, seed=0, size=128)
    # one synthetic image without a real twin (its content differs from every other image)
    a = np.asarray(Image.open(probe / "synthetic" / "scene_000.png").convert("RGB"))[:, ::-1]
    Image.fromarray(np.ascontiguousarray(a)).save(probe / "synthetic" / Path(UNPAIRED).name)
    store = root / "store.zarr"
    extract(probe / "real", probe / "synthetic", store, model="ssd300_vgg16", weights="random:0",
            layers=LAYERS, batch_size=7, progress=False)
    write_stats(store)
    compute_maps(store, "all")
    return root


def tiny_store() -> Path:
    return tiny_root() / "store.zarr"


def store_without_maps(dest: Path) -> Path:
    """A copy of the tiny store without its maps/ group."""
    out = Path(dest) / "nomaps.zarr"
    if not out.exists():
        shutil.copytree(tiny_store(), out, ignore=lambda d, names: ["maps"] if Path(d) == tiny_store() else [])
    return out
