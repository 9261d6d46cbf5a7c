"""Shared fixtures: small real photos from scikit-image and their synthetic twins."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# No test may touch the user's torch or Hugging Face cache, or the network: `coco` / `imagenet`
# would download what is not cached, so downloads are switched off (tests that check the download
# path replace the downloader).
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="fakesegment-torch-home-")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="fakesegment-hf-home-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["FAKESEGMENT_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# resnet18 with seeded random weights: fast, and its activations are well inside float16
# (ssdlite's random initialisation shrinks them below float16's range).
FAST_MODEL = "torchvision:resnet18"
FAST_LAYERS = ["layer1", "layer2", "layer3"]


def photo(name: str, size: int = 128) -> np.ndarray:
    from skimage import data

    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.asarray(Image.fromarray(arr[:, :, :3]).resize((size, size), Image.BILINEAR))


def make_pair_dirs(root: Path, names=PHOTOS, size: int = 128) -> tuple[Path, Path]:
    """real/<name>.png and synthetic/<name>.png (brighter, blurred twin)."""
    real, syn = root / "real", root / "synthetic"
    real.mkdir(parents=True, exist_ok=True)
    syn.mkdir(parents=True, exist_ok=True)
    for n in names:
        a = photo(n, size)
        Image.fromarray(a).save(real / f"{n}.png")
        b = np.clip(a.astype(int) + 25, 0, 255).astype(np.uint8)
        Image.fromarray(b).save(syn / f"{n}.png")
    return real, syn


@pytest.fixture(scope="session")
def pair_dirs(tmp_path_factory) -> tuple[Path, Path]:
    return make_pair_dirs(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def fast_store(tmp_path_factory, pair_dirs) -> Path:
    """A store of the 4+4 photos made with the fast model (random weights, seed 0)."""
    from fakesegment_nb.extract import extract

    path = tmp_path_factory.mktemp("stores") / "fast.zarr"
    extract(*pair_dirs, path, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=3,
            progress=False)
    return path
