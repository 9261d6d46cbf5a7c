"""Stores for the statistics, SSIM and loss tests: hand-built ones with exactly known features,
and ones made from scikit-image photos with a small random-weight network.

resnet18 (random weights, seed 0) is the network: it is fast and its random-init activations
are well scaled, where the random-init SSDLite's vanish below float16 (all stored features 0).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fakesegment_nb.writer import StoreWriter

MODEL = "torchvision:resnet18"
LAYERS = ["layer1", "layer2", "layer3", "avgpool"]  # 56x56 ... 1x1 maps
BASES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")
SEVERITIES = (1, 2, 3)
SIZE = 64


def photo(name: str, size: int = SIZE) -> np.ndarray:
    from skimage import data

    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.array(Image.fromarray(arr[:, :, :3]).resize((size, size), Image.BILINEAR))


def degrade(img: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """A synthetic twin of known severity: sensor noise and a blue cast, both rising with it."""
    rng = np.random.default_rng(seed)
    x = img.astype(np.float64) + np.array([0, 0, 12.0]) * severity
    x = x + rng.normal(0, 12.0 * severity, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def build_store(path, features: dict[str, np.ndarray], domains, pairs=None, ids=None,
                model: str = "handmade", layers=None) -> Path:
    """A store holding exactly ``features`` ({layer: (n, C, h, w)}) for images of ``domains``."""
    layers = list(layers or features)
    n = len(domains)
    ids = ids or [f"{d}/img{i:03d}.png" for i, d in enumerate(domains)]
    pairs = pairs or [""] * n
    w = StoreWriter(path)
    w.create({"model": model, "weights": "random:0", "weights_trained": False, "input_size": [0, 0],
              "layers": layers}, {l: features[l].shape[1:] for l in layers})
    start = w.reserve(n)
    w.write_features(start, {l: features[l] for l in layers})
    w.commit(pd.DataFrame({"image": ids, "domain": list(domains), "path": ids, "pair": pairs,
                           "height": 1, "width": 1, "sha256": [f"h{i}" for i in range(n)]}))
    return Path(path)


@functools.lru_cache(maxsize=1)
def backbone():
    import torch

    from fakesegment_nb.weights import load_backbone

    torch.set_num_threads(2)
    return load_backbone(MODEL, "random:0", LAYERS)[0]


@functools.lru_cache(maxsize=1)
def photo_features() -> dict:
    """resnet18 features of the base photos and of their twins at every severity."""
    bases = [photo(n) for n in BASES]
    imgs = {0: bases, **{s: [degrade(b, s, seed=i) for i, b in enumerate(bases)] for s in SEVERITIES}}
    return {s: backbone().run(ims) for s, ims in imgs.items()}, imgs


@functools.lru_cache(maxsize=None)
def severity_store(severity: int) -> Path:
    """Real base photos + their twins at ``severity``, paired (hand-written from Backbone.run)."""
    feats, _ = photo_features()
    n = len(BASES)
    features = {l: np.concatenate([feats[0][l], feats[severity][l]]) for l in LAYERS}
    ids = [f"real/{b}.png" for b in BASES] + [f"synthetic/{b}.png" for b in BASES]
    pairs = [""] * n + ids[:n]
    root = Path(tempfile.mkdtemp(prefix="fs-stats-"))
    return build_store(root / f"sev{severity}.zarr", features, ["real"] * n + ["synthetic"] * n,
                       pairs=pairs, ids=ids, model=MODEL, layers=LAYERS)


@functools.lru_cache(maxsize=1)
def extracted_store() -> tuple[Path, Path, Path]:
    """``fakesegment extract`` over real photos and their severity-2 twins as PNG files:
    (store, real dir, synthetic dir).

    256x256 images: resnet18's preprocessing then only crops, so the store's uint8 path and
    the loss's float path give the same network input (a uint8 resize rounds, a float one not).
    """
    from fakesegment_nb.extract import extract

    root = Path(tempfile.mkdtemp(prefix="fs-extract-"))
    real, syn = root / "real", root / "synthetic"
    real.mkdir(), syn.mkdir()
    for i, name in enumerate(BASES[:4]):
        a = photo(name, 256)
        Image.fromarray(a).save(real / f"{name}.png")
        Image.fromarray(degrade(a, 2, seed=i)).save(syn / f"{name}.png")
    store = root / "store.zarr"
    extract(real, syn, store, model=MODEL, layers=LAYERS, weights="random:0", batch_size=4, progress=False)
    return store, real, syn
