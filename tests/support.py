"""Everything the tests build, in one place and with one lifecycle.

Images, probes and stores are built lazily, at most once per test session, into folders of
pytest's ``tmp_path_factory`` (pytest removes old ones); ``conftest.py`` opens the session
before the first test and drops what was built after the last. Outside a pytest session the
builders refuse, so nothing lands in a stray temporary folder.

What is here:

- photos from scikit-image and their synthetic twins: :func:`photo`, :func:`degrade`,
  :func:`make_pair_dirs`, :func:`pair_dirs` (4+4 PNGs) and :func:`fast_store` (extracted with the
  fast model);
- the notebook store (:func:`tiny_store`): 3 probe pairs plus one unpaired synthetic image of
  another shape (2:1), SSD300-VGG16 with random weights, statistics and maps -- for the notebook,
  widget, browser and evaluate-at-original-resolution tests;
- probes with maps for the maps/evaluate tests: :func:`small_probe` (SSD300, random weights),
  :func:`lite0_probe` (efficientnet_lite0, ImageNet weights), :func:`unpaired_store`;
- stores for the statistics, SSIM and loss tests: :func:`build_store` (exactly given features),
  :func:`severity_store` and :func:`extracted_store` (photos and twins of known severity through
  resnet18).
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"

# resnet18 with seeded random weights: fast, and its activations are well inside float16
# (the random-init SSDLite's shrink below float16's range: every stored feature 0).
FAST_MODEL = "torchvision:resnet18"
FAST_LAYERS = ["layer1", "layer2", "layer3"]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")

# the notebook store: three SSD layers (fc7's 1024 channels would triple the statistics time)
TINY_LAYERS = ["conv4_3", "conv8_2", "conv9_2"]
UNPAIRED = "synthetic/unpaired_extra.png"

# the maps/evaluate probes: seed 0 is the tuning seed
SMALL_N = 10
LITE0_N = 8
SEED = 0

# the statistics stores: resnet18 layers from 56x56 down to 1x1 maps
STATS_LAYERS = ["layer1", "layer2", "layer3", "avgpool"]
BASES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")
SEVERITIES = (1, 2, 3)
SIZE = 64


# --------------------------------------------------------------------------------------------
# the lifecycle


class _Session:
    def __init__(self, tmp_path_factory):
        self.factory = tmp_path_factory
        self.built: dict = {}


_session: _Session | None = None


def open_session(tmp_path_factory) -> None:
    """Build into ``tmp_path_factory`` from now on (conftest.py, once per session)."""
    global _session
    _session = _Session(tmp_path_factory)


def close_session() -> None:
    """Forget what was built (conftest.py, after the last test)."""
    global _session
    _session = None


def _active() -> _Session:
    if _session is None:
        raise RuntimeError("tests/support.py builds test data only inside a pytest session (see conftest.py)")
    return _session


def once(build):
    """``build(*args)`` runs at most once per session; later calls return what it returned."""

    @functools.wraps(build)
    def get(*args):
        built = _active().built
        key = (build.__name__, args)
        if key not in built:
            built[key] = build(*args)
        return built[key]

    return get


def folder(name: str) -> Path:
    """A new folder of this session's ``tmp_path_factory``."""
    return _active().factory.mktemp(name)


def copy_store(store: Path, dest: Path) -> Path:
    """A copy of ``store`` in ``dest`` (for a test that writes to it)."""
    out = Path(dest) / Path(store).name
    shutil.copytree(store, out)
    return out


# --------------------------------------------------------------------------------------------
# photos and their twins


def photo(name: str, size: int = SIZE) -> np.ndarray:
    """A scikit-image sample photo as ``(size, size, 3)`` uint8 RGB."""
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


def make_pair_dirs(root: Path, names=PHOTOS, size: int = 128) -> tuple[Path, Path]:
    """real/<name>.png and synthetic/<name>.png (a brighter twin) under ``root``."""
    real, syn = root / "real", root / "synthetic"
    real.mkdir(parents=True, exist_ok=True)
    syn.mkdir(parents=True, exist_ok=True)
    for n in names:
        a = photo(n, size)
        Image.fromarray(a).save(real / f"{n}.png")
        b = np.clip(a.astype(int) + 25, 0, 255).astype(np.uint8)
        Image.fromarray(b).save(syn / f"{n}.png")
    return real, syn


@once
def pair_dirs() -> tuple[Path, Path]:
    """The 4 photos and their twins at 128 px: (real dir, synthetic dir)."""
    return make_pair_dirs(folder("photos"))


@once
def fast_store() -> Path:
    """A store of :func:`pair_dirs` made with the fast model (random weights, seed 0)."""
    from fakesegment_nb.extract import extract

    path = folder("stores") / "fast.zarr"
    extract(*pair_dirs(), path, model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=3,
            progress=False)
    return path


# --------------------------------------------------------------------------------------------
# the notebook store


@once
def tiny_store() -> Path:
    """3 probe pairs at 128 px plus :data:`UNPAIRED` (256 x 128, a 2:1 image: its original shape
    is not the network input's), SSD300-VGG16 (random weights) on :data:`TINY_LAYERS`, with
    statistics and the maps of every method (``domain`` from :func:`stand_in_domain_maps` when
    the maps step does not make it). The probe with its ``masks/`` (one for :data:`UNPAIRED`
    too) is ``tiny_store().parent / "probe"``."""
    from fakesegment_nb.extract import extract
    from fakesegment_nb.maps import compute_maps, stored_methods
    from fakesegment_nb.probe import make_probe
    from fakesegment_nb.stats import write_stats

    root = folder("tiny")
    probe = root / "probe"
    make_probe(probe, n=3, seed=0, size=128)
    # one synthetic image without a real twin (its content differs from every other image), 2:1
    for sub, mode in (("synthetic", Image.BILINEAR), ("masks", Image.NEAREST)):
        with Image.open(probe / sub / "scene_000.png") as im:
            im.transpose(Image.FLIP_LEFT_RIGHT).resize((256, 128), mode).save(probe / sub / Path(UNPAIRED).name)
    store = root / "store.zarr"
    extract(probe / "real", probe / "synthetic", store, model="ssd300_vgg16", weights="random:0",
            layers=TINY_LAYERS, batch_size=7, progress=False)
    write_stats(store)
    compute_maps(store, "all")
    if "domain" not in stored_methods(store):
        stand_in_domain_maps(store)
    return store


def stand_in_domain_maps(store: Path) -> None:
    """TEST DATA ONLY: a ``maps/domain`` group laid out as ``maps/group.py`` lays out every
    method's group (``score`` at input resolution, ``mask``, per-image ``threshold``), written
    with ``write_maps``, for presentation tests on a store whose maps step does not make the
    ``domain`` map (yet, or not for so few images). Its score is not the domain method: the
    stored reference score smoothed, plus one for synthetic images, so that their masks cover
    most of each image (the case the overlays must keep readable); the threshold is calibrated
    on the real images' scores at 5% false positives, as the maps calibrate theirs."""
    from scipy.ndimage import gaussian_filter

    from fakesegment_nb import open_store
    from fakesegment_nb.calibration import calibrate
    from fakesegment_nb.maps import Maps, read_maps, write_maps
    from fakesegment_nb.maps.group import build_dataset

    tree = open_store(store, chunks=None)
    ref = np.nan_to_num(np.asarray(read_maps(tree, "reference")["score"].values, np.float64), nan=0.0)
    synthetic = np.array([str(d) == "synthetic" for d in tree["domain"].values.tolist()])
    score = np.log1p(gaussian_filter(ref, sigma=(0, 12, 12))) + synthetic[:, None, None]
    thr = calibrate(score[~synthetic], 0.05)
    n = score.shape[0]
    ds = build_dataset(tree, "domain", np.arange(n), {}, {}, score.shape[1:], thr, 0.05,
                       "stand-in for tests", {"stand_in": True}, n)
    ds = ds.assign(score=(("image", "y", "x"), score.astype(np.float32)),
                   mask=(("image", "y", "x"), score.astype(np.float32) > np.float64(thr)))
    write_maps(store, Maps("domain", ds))


def store_without_maps(dest: Path) -> Path:
    """A copy of :func:`tiny_store` in ``dest`` without its maps/ group."""
    src = tiny_store()
    out = Path(dest) / "nomaps.zarr"
    if not out.exists():
        shutil.copytree(src, out, ignore=lambda d, names: ["maps"] if Path(d) == src else [])
    return out


# --------------------------------------------------------------------------------------------
# probes with maps


@once
def small_probe() -> tuple[Path, Path]:
    """(probe folder, store with paired and reference maps): :data:`SMALL_N` pairs, SSD300-VGG16
    with seeded random weights (what CI can use)."""
    from fakesegment_nb.extract import extract
    from fakesegment_nb.maps import compute_maps
    from fakesegment_nb.probe import make_probe

    root = folder("small-probe")
    probe = root / "probe"
    make_probe(probe, n=SMALL_N, seed=SEED)
    store = root / "store.zarr"
    extract(probe / "real", probe / "synthetic", store, model="ssd300_vgg16", weights="random:0", progress=False)
    compute_maps(store, "all")
    return probe, store


@once
def lite0_probe() -> tuple[Path, Path]:
    """(probe folder, store with paired and reference maps): :data:`LITE0_N` pairs of the tuning
    kinds, efficientnet_lite0 with its packaged ImageNet weights."""
    from fakesegment_nb.extract import extract
    from fakesegment_nb.maps import compute_maps
    from fakesegment_nb.probe import make_probe

    root = folder("lite0-probe")
    probe = root / "probe"
    make_probe(probe, n=LITE0_N, seed=SEED, kinds="tuning")
    store = root / "store.zarr"
    extract(probe / "real", probe / "synthetic", store, model="efficientnet_lite0", weights="auto", progress=False)
    compute_maps(store, "all")
    return probe, store


def noise_images(dest: Path, names, size: int, rng: np.random.Generator) -> Path:
    """Uniform-noise RGB PNGs ``size`` x ``size`` named ``names`` in a new folder ``dest``."""
    dest.mkdir()
    for name in names:
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(dest / name)
    return dest


@once
def unpaired_store() -> Path:
    """3 real and 3 synthetic noise images with no common stem, no maps.

    SSD300's reference-map layers only: SSDLite's random activations underflow float16 (all zeros).
    """
    from fakesegment_nb.extract import extract

    root = folder("unpaired")
    rng = np.random.default_rng(1)
    for dom in ("real", "synthetic"):
        noise_images(root / dom, [f"{dom}_{i}.png" for i in range(3)], 96, rng)
    store = root / "store.zarr"
    extract(root / "real", root / "synthetic", store, model="ssd300_vgg16", layers=["fc7", "conv8_2"],
            weights="random:0", progress=False)
    return store


# --------------------------------------------------------------------------------------------
# statistics stores


def build_store(path, features: dict[str, np.ndarray], domains, pairs=None, ids=None,
                model: str = "handmade", layers=None) -> Path:
    """A store holding exactly ``features`` ({layer: (n, C, h, w)}) for images of ``domains``."""
    from fakesegment_nb.writer import StoreWriter

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


@once
def backbone():
    """resnet18 (random weights, seed 0) on :data:`STATS_LAYERS`."""
    import torch

    from fakesegment_nb.weights import load_backbone

    torch.set_num_threads(2)
    return load_backbone(FAST_MODEL, "random:0", STATS_LAYERS)[0]


@once
def photo_features() -> tuple[dict, dict]:
    """resnet18 features of the base photos (severity 0) and of their twins at every severity,
    and the images: ``({severity: {layer: array}}, {severity: [images]})``."""
    bases = [photo(n) for n in BASES]
    imgs = {0: bases, **{s: [degrade(b, s, seed=i) for i, b in enumerate(bases)] for s in SEVERITIES}}
    return {s: backbone().run(ims) for s, ims in imgs.items()}, imgs


@once
def severity_store(severity: int) -> Path:
    """Real base photos + their twins at ``severity``, paired (hand-written from Backbone.run)."""
    feats, _ = photo_features()
    n = len(BASES)
    features = {l: np.concatenate([feats[0][l], feats[severity][l]]) for l in STATS_LAYERS}
    ids = [f"real/{b}.png" for b in BASES] + [f"synthetic/{b}.png" for b in BASES]
    pairs = [""] * n + ids[:n]
    return build_store(folder("severity") / f"sev{severity}.zarr", features, ["real"] * n + ["synthetic"] * n,
                       pairs=pairs, ids=ids, model=FAST_MODEL, layers=STATS_LAYERS)


@once
def extracted_store() -> tuple[Path, Path, Path]:
    """``fakesegment extract`` over 4 real photos and their severity-2 twins as PNG files:
    (store, real dir, synthetic dir).

    256x256 images: resnet18's preprocessing then only crops, so the store's uint8 path and
    the loss's float path give the same network input (a uint8 resize rounds, a float one not).
    """
    from fakesegment_nb.extract import extract

    root = folder("extracted")
    real, syn = root / "real", root / "synthetic"
    real.mkdir(), syn.mkdir()
    for i, name in enumerate(BASES[:4]):
        a = photo(name, 256)
        Image.fromarray(a).save(real / f"{name}.png")
        Image.fromarray(degrade(a, 2, seed=i)).save(syn / f"{name}.png")
    store = root / "store.zarr"
    extract(real, syn, store, model=FAST_MODEL, layers=STATS_LAYERS, weights="random:0", batch_size=4, progress=False)
    return store, real, syn


# --------------------------------------------------------------------------------------------
# two synthetic sets in one store


@once
def two_set_stores() -> dict[str, Path]:
    """The :data:`BASES` photos (64 px) as real images and two synthetic sets of their twins,
    extracted with the fast model (random weights, seed 0): ``synthetic`` (severity 1, every
    image paired) and ``v2`` (severity 3, plus ``extra.png``, unpaired). Returns the stores
    ``both`` (the two sets, ``synthetic`` first), ``synthetic`` and ``v2`` (each set alone,
    extracted from the same files) and the folders ``real``, ``synthetic_dir``, ``v2_dir``."""
    from fakesegment_nb.extract import extract

    root = folder("two-sets")
    dirs = {d: root / d for d in ("real", "synthetic", "v2")}
    for d in dirs.values():
        d.mkdir()
    for i, name in enumerate(BASES):
        a = photo(name)
        Image.fromarray(a).save(dirs["real"] / f"{name}.png")
        Image.fromarray(degrade(a, 1, seed=i)).save(dirs["synthetic"] / f"{name}.png")
        Image.fromarray(degrade(a, 3, seed=10 + i)).save(dirs["v2"] / f"{name}.png")
    Image.fromarray(degrade(photo(BASES[0])[::-1].copy(), 2, seed=99)).save(dirs["v2"] / "extra.png")
    kw = dict(model=FAST_MODEL, layers=FAST_LAYERS, weights="random:0", batch_size=7, progress=False)
    out = {"real": dirs["real"], "synthetic_dir": dirs["synthetic"], "v2_dir": dirs["v2"]}
    for name, sets in (("both", ("synthetic", "v2")), ("synthetic", ("synthetic",)), ("v2", ("v2",))):
        out[name] = root / f"{name}.zarr"
        for s in sets:
            extract(dirs["real"], dirs[s], out[name], set_name=s, **kw)
    return out
