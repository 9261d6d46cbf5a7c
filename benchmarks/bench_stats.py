"""Benchmark of ``fakesegment stats`` and of the batched SSIM.

1. ``stats`` (all three tables + the store cache) over a store of N images (default 200) and
   one of N/4 (50): wall time and peak memory, each measured in a fresh child process
   (``resource.getrusage``: the child's peak RSS, and its RSS after imports, before the
   computation). The issue asks for peak(200) / peak(50) <= 1.3.
2. With ``--sets``: two synthetic sets in one store against two stores of one set each (the same
   files extracted): ``stats`` wall time of the two-set store against the sum of the two
   single-set stores (it should be about the sum or less: the real images are read once), and of
   the two-set store when its first set is cached and only the added one is computed.
3. Batched SSIM (:func:`fakesegment_nb.ssim.feature_ssim`) against a per-channel loop over
   ``skimage.metrics.structural_similarity`` on the same stored feature maps: speed-up >= 20x,
   judged on float32, the precision ``pairs.csv`` computes SSIM in (float64 printed beside it).

The stores are made once under ``--workdir`` (reused on later runs) from scikit-image photos:
random crops, flips and brightness of 8 photos as "real" images (96x96 px), each with a paired
"synthetic" twin (noise and a colour cast), features of ``--model`` (default
``torchvision:resnet18``, random weights, layers layer1-layer4: 64x56x56 ... 512x7x7).

    .venv/bin/python benchmarks/bench_stats.py [--n 200] [--model ssd300_vgg16] [--sets]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel", "camera", "coins")
MODELS = {"torchvision:resnet18": ["layer1", "layer2", "layer3", "layer4"], "ssd300_vgg16": None,
          "ssdlite320_mobilenet_v3_large": None}

CHILD = r"""
import json, sys, time


def hwm_kib():  # peak RSS of this process; unlike ru_maxrss it is not inherited across exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


import fakesegment_nb as fs
import torch  # the SSIM of the pairs table imports it: count it in the baseline
store, out, stale = sys.argv[1], sys.argv[2], sys.argv[3:]
if stale:  # the cache as it was before the sets named were added: only they are computed
    import zarr
    g = zarr.open_group(store, mode="r+", use_consolidated=False)
    for name in g["stats"]:
        attrs = dict(g["stats"][name].attrs)
        attrs["fingerprints"] = {k: v for k, v in attrs["fingerprints"].items() if k not in stale}
        g["stats"][name].attrs.put(attrs)
base = hwm_kib()
t = time.perf_counter()
tables = fs.write_stats(store, out, recompute=not stale)
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "peak_kib": hwm_kib(), "base_kib": base, "layers": len(tables.layers),
                  "pairs": len(tables.pairs)}))
"""


def make_images(root: Path, n_pairs: int, size: int = 96, seed: int = 0) -> tuple[Path, Path]:
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    real, syn = root / "real", root / "synthetic"
    real.mkdir(parents=True, exist_ok=True)
    syn.mkdir(parents=True, exist_ok=True)
    photos = []
    for name in PHOTOS:
        a = getattr(data, name)()
        photos.append(np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a[:, :, :3])
    for i in range(n_pairs):
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        c = int(rng.integers(min(h, w) // 3, min(h, w)))
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        crop = np.asarray(Image.fromarray(p[y:y + c, x:x + c]).resize((size, size), Image.BILINEAR), dtype=np.float64)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip(crop * rng.uniform(0.8, 1.2), 0, 255)
        twin = np.clip(crop + np.array([0, 0, 15.0]) + rng.normal(0, 15, crop.shape), 0, 255)
        Image.fromarray(crop.round().astype(np.uint8)).save(real / f"img{i:04d}.png")
        Image.fromarray(twin.round().astype(np.uint8)).save(syn / f"img{i:04d}.png")
    return real, syn


def build_store(workdir: Path, n_images: int, model: str) -> Path:
    from fakesegment_nb.extract import extract

    tag = model.replace(":", "_")
    store = workdir / f"{tag}_{n_images}.zarr"
    if (store / "zarr.json").is_file():
        return store
    real, syn = make_images(workdir / f"images_{n_images}", n_images // 2)
    t = time.perf_counter()
    extract(real, syn, store, model=model, layers=MODELS.get(model), weights="random:0", batch_size=8,
            progress=False)
    print(f"  built {store} ({n_images} images) in {time.perf_counter() - t:.0f} s", flush=True)
    return store


def second_set(real: Path, dest: Path, seed: int = 1) -> Path:
    """Another synthetic set of the same scenes: every real image with a warm cast, a blur and
    less noise than the first set's twins (same file names: paired by stem)."""
    from PIL import Image, ImageFilter

    if dest.is_dir() and len(list(dest.iterdir())) == len(list(real.iterdir())):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for p in sorted(real.iterdir()):
        a = np.asarray(Image.open(p).filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float64)
        a = np.clip(a + np.array([12.0, 4.0, -8.0]) + rng.normal(0, 6, a.shape), 0, 255)
        Image.fromarray(a.round().astype(np.uint8)).save(dest / p.name)
    return dest


def build_set_stores(workdir: Path, store: Path, n_images: int, model: str) -> dict[str, Path]:
    """Beside ``store`` (its real images and the set ``synthetic``): ``v2`` alone (the same real
    files and :func:`second_set`) and ``both`` (a copy of ``store`` with ``v2`` added)."""
    import shutil

    from fakesegment_nb.extract import extract

    real = workdir / f"images_{n_images}" / "real"
    v2 = second_set(real, workdir / f"images_{n_images}" / "v2")
    tag = model.replace(":", "_")
    out = {"synthetic": store, "v2": workdir / f"{tag}_{n_images}_v2.zarr", "both": workdir / f"{tag}_{n_images}_both.zarr"}
    kw = dict(model=model, layers=MODELS.get(model), weights="random:0", batch_size=8, progress=False, set_name="v2")
    if not (out["v2"] / "zarr.json").is_file():
        extract(real, v2, out["v2"], **kw)
    if not (out["both"] / "zarr.json").is_file():
        shutil.copytree(store, out["both"])
        extract(real, v2, out["both"], **kw)
    return out


def run_stats(store: Path, out: Path, stale: tuple[str, ...] = ()) -> dict:
    """``write_stats`` in a child process: every set recomputed, or, with ``stale``, only those
    sets (their cached rows made out of date first)."""
    res = subprocess.run([sys.executable, "-c", CHILD, str(store), str(out), *stale], check=True,
                         capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_sets(workdir: Path, store: Path, n_images: int, model: str, repeat: int = 1) -> None:
    """Two sets in one store against one store per set: stats wall times, side by side (each run
    recomputes and writes its store's cache; the added-set run then finds the first set cached)."""
    stores = build_set_stores(workdir, store, n_images, model)
    walls = {k: [] for k in ("synthetic", "v2", "both", "both, v2 added")}
    peaks = {}
    for _ in range(repeat):  # interleaved, so that a change of load hits every case alike
        for name in ("synthetic", "v2", "both"):
            r = run_stats(stores[name], workdir / "out_sets")
            walls[name].append(r["wall_s"])
            peaks[name] = r["peak_kib"]
        walls["both, v2 added"].append(run_stats(stores["both"], workdir / "out_sets", ("v2",))["wall_s"])
    med = {k: statistics.median(v) for k, v in walls.items()}
    n_real = n_images // 2
    print(f"two sets in one store ({n_real} real images, sets of {n_real} and {n_real}) against a store per set, "
          f"median of {repeat} interleaved run(s):")
    for k, v in med.items():
        print(f"  stats {k:15s}: wall {v:6.1f} s" + (f", peak RSS {peaks[k] / 1024:7.1f} MiB" if k in peaks else ""))
    total = med["synthetic"] + med["v2"]
    print(f"  two-set store / sum of the single-set stores: {med['both'] / total:.2f} "
          f"({med['both']:.1f} s vs {total:.1f} s); adding v2 to the cached store / v2 alone: "
          f"{med['both, v2 added'] / med['v2']:.2f}", flush=True)


def _time(f, repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_ssim(name: str, a: np.ndarray, b: np.ndarray) -> dict:
    """Batched feature_ssim (float32 as pairs.csv computes it, and float64) against the skimage
    loop; medians of repeated runs on both sides."""
    import torch
    from skimage.metrics import structural_similarity

    from fakesegment_nb.ssim import feature_ssim

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out64 = feature_ssim(ta, tb).numpy()
    t64 = _time(lambda: feature_ssim(ta, tb), 5)
    ta32, tb32 = ta.float(), tb.float()
    out32 = feature_ssim(ta32, tb32).numpy()
    t32 = _time(lambda: feature_ssim(ta32, tb32), 5)

    def loop():
        res = []
        for x, y in zip(a, b):
            vals = []
            for cx, cy in zip(x, y):
                r = max(cx.max(), cy.max()) - min(cx.min(), cy.min())
                if r != 0:
                    vals.append(structural_similarity(cx, cy, data_range=r, gaussian_weights=True, sigma=1.5,
                                                      use_sample_covariance=False))
            res.append(np.mean(vals) if vals else np.nan)
        return np.asarray(res)

    ref = loop()
    t_loop = _time(loop, 3)
    return {"name": name, "maps": int(a.shape[0] * a.shape[1]), "shape": list(a.shape[2:]),
            "float64_s": t64, "float32_s": t32, "skimage_loop_s": t_loop,
            "speedup64": t_loop / t64, "speedup32": t_loop / t32,
            "diff64": float(np.nanmax(np.abs(out64 - ref))), "diff32": float(np.nanmax(np.abs(out32 - ref)))}


def stored_pairs(store: Path, layer: str, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    import fakesegment_nb as fs

    tree = fs.open_store(store)
    pairs = fs.pair_table(store)
    pairs = pairs[pairs["layer"] == layer].head(n_pairs)
    feats = fs.feature_layer(tree, layer)
    return (feats.sel(image=list(pairs["image"])).values.astype(np.float64),
            feats.sel(image=list(pairs["pair"])).values.astype(np.float64))


def ssd_shaped_pairs(n_pairs: int, channels: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random ReLU-like maps of an SSD300 layer's shape (conv4_3: 512x38x38, fc7: 1024x19x19)."""
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.normal(0, 1, (n_pairs, channels, size, size)), 0).astype(np.float16)
    b = np.maximum(a + rng.normal(0, 0.3, a.shape), 0).astype(np.float16)
    return a.astype(np.float64), b.astype(np.float64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="images in the large store (half real, half synthetic)")
    p.add_argument("--small", type=int, default=None, help="images in the small store (default n/4)")
    p.add_argument("--model", default="torchvision:resnet18", choices=sorted(MODELS))
    p.add_argument("--workdir", default="/tmp/fakesegment-bench-stats")
    p.add_argument("--ssim-pairs", type=int, default=8)
    p.add_argument("--strict", action="store_true", help="exit 1 when a criterion is missed")
    p.add_argument("--sets", action="store_true", help="also time a store of two synthetic sets (section 2)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each case of --sets (the median is printed)")
    args = p.parse_args(argv)
    small = args.small or args.n // 4
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"stores: {args.model}, random weights, 96x96 photos, under {workdir}", flush=True)
    stores = {n: build_store(workdir, n, args.model) for n in (small, args.n)}

    res = {}
    for n, store in stores.items():
        run_stats(store, workdir / f"out_{n}")  # warm the page cache: both runs read from memory
        res[n] = run_stats(store, workdir / f"out_{n}")
        r = res[n]
        print(f"stats {n:4d} images: wall {r['wall_s']:6.1f} s, peak RSS {r['peak_kib'] / 1024:7.1f} MiB "
              f"(after imports {r['base_kib'] / 1024:.1f} MiB, computation +{(r['peak_kib'] - r['base_kib']) / 1024:.1f} MiB), "
              f"{r['layers']} layers, {r['pairs']} pair rows", flush=True)
    big, lit = res[args.n], res[small]
    ratio = big["peak_kib"] / lit["peak_kib"]
    inc = (big["peak_kib"] - big["base_kib"]) / max(1, lit["peak_kib"] - lit["base_kib"])
    print(f"peak RSS ratio {args.n}/{small} images: {ratio:.2f} (<= 1.3 required: {'ok' if ratio <= 1.3 else 'FAIL'}); "
          f"ratio of the computation's increments: {inc:.2f}")

    if args.sets:
        bench_sets(workdir, stores[args.n], args.n, args.model, args.repeat)

    import torch

    print(f"SSIM, batched (torch, {torch.get_num_threads()} threads) vs a per-channel skimage loop, same maps:")
    cases = [(f"{args.model} {l}", *stored_pairs(stores[args.n], l, args.ssim_pairs))
             for l in (MODELS.get(args.model) or ["conv4_3", "fc7"])[:3]]
    cases += [("ssd300-shaped conv4_3", *ssd_shaped_pairs(4, 512, 38)),
              ("ssd300-shaped fc7", *ssd_shaped_pairs(4, 1024, 19))]
    ok = True
    for name, a, b in cases:
        if min(a.shape[2:]) < 11:
            continue
        s = bench_ssim(name, a, b)
        ok &= s["speedup32"] >= 20
        verdict = "meets" if s["speedup32"] >= 20 else "MISSES"
        print(f"  {s['name']}: {s['maps']} maps of {s['shape'][0]}x{s['shape'][1]}: skimage loop {s['skimage_loop_s']:.2f} s, "
              f"batched float64 {s['float64_s']:.3f} s ({s['speedup64']:.0f}x, max |diff| {s['diff64']:.0e}), "
              f"float32 {s['float32_s']:.3f} s ({s['speedup32']:.0f}x, max |diff| {s['diff32']:.0e}); "
              f"float32 (pairs.csv) {verdict} >= 20x", flush=True)
    return 1 if args.strict and not (ratio <= 1.3 and ok) else 0


if __name__ == "__main__":
    sys.exit(main())
