"""Extraction figures: speed against a bare library process doing the same forward passes, store
size, single map read latency, and peak memory at 32 vs 128 images.

Run: .venv/bin/python benchmarks/bench_extract.py [--model ssd300_vgg16|efficientnet_lite0] [--repeats 3]
     [--device cpu|cuda]

ssd300_vgg16 runs with seeded random weights (random:0) against torchvision's SSD backbone;
efficientnet_lite0 with its packaged ImageNet weights (auto) against timm's features_only model
(same arithmetic; the bare process does not load weights).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
PY = sys.executable
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field",
          "immunohistochemistry", "retina")


def make_images(root: Path, n: int, size: int = 320) -> tuple[Path, Path]:
    """n images of size x size: crops of scikit-image photos, half real, half a brightened twin."""
    from skimage import data

    real, syn = root / "real", root / "synthetic"
    real.mkdir(parents=True), syn.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        photo = getattr(data, PHOTOS[i % len(PHOTOS)])()[..., :3]
        h, w = photo.shape[:2]
        s = min(h, w) // 2 + int(rng.integers(0, min(h, w) // 2))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = Image.fromarray(photo[y:y + s, x:x + s]).resize((size, size), Image.BILINEAR)
        if i % 2 == 0:
            crop.save(real / f"img_{i:04d}.png")
        else:
            a = np.clip(np.asarray(crop).astype(int) + 20, 0, 255).astype(np.uint8)
            Image.fromarray(a).save(syn / f"img_{i:04d}.png")
    return real, syn


def timed_child(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stdout of a child process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{cmd} failed with status {status}")
    return wall, usage.ru_maxrss // 1024, out


WEIGHTS = {"ssd300_vgg16": "random:0", "efficientnet_lite0": "auto"}
MODEL = "ssd300_vgg16"
DEVICE = "cpu"


def extract_cmd(real, syn, store, batch=8):
    return [PY, "-m", "fakesegment_nb.cli", "extract", "--real", str(real), "--synthetic", str(syn),
            "--store", str(store), "--model", MODEL, "--weights", WEIGHTS[MODEL], "--batch-size", str(batch),
            "--device", DEVICE, "--quiet"]


def main():
    global MODEL, DEVICE
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the CLI comparison")
    ap.add_argument("--inproc-repeats", type=int, default=6, help="repeats of the in-process comparison")
    ap.add_argument("--model", default=MODEL, choices=sorted(WEIGHTS))
    ap.add_argument("--n", type=int, default=32, help="images of the speed comparisons (default 32)")
    ap.add_argument("--device", default=DEVICE, help="cpu or cuda (both processes run there)")
    args = ap.parse_args()
    MODEL, DEVICE = args.model, args.device
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        n = args.n
        real, syn = make_images(work / "imgs", n)
        both = work / "imgs"

        # 1. end to end: CLI process vs bare torchvision process, alternated
        cli, bare, bare_fwd = [], [], []
        for r in range(args.repeats):
            store = work / f"s{r}.zarr"
            cli.append(timed_child(extract_cmd(real, syn, store))[0])
            wall, _, out = timed_child([PY, str(HERE / "_bare_forward.py"), str(both), "8", MODEL, DEVICE])
            bare.append(wall)
            bare_fwd.append(float(out.split("forward_s=")[1]))
        lib = "torchvision" if MODEL == "ssd300_vgg16" else "timm"
        print(f"extract CLI, {n} images 320x320, {MODEL} ({WEIGHTS[MODEL]}, {DEVICE}): median "
              f"{statistics.median(cli):.2f} s = {n / statistics.median(cli):.1f} images/s whole process "
              f"(runs {', '.join(f'{x:.2f}' for x in cli)})")
        print(f"bare {lib} process (import, build, decode, forward): median {statistics.median(bare):.2f} s; "
              f"its forward passes alone: median {statistics.median(bare_fwd):.2f} s = "
              f"{n / statistics.median(bare_fwd):.1f} images/s")
        print(f"RATIO extract CLI / bare {lib} process = {statistics.median(cli) / statistics.median(bare):.3f} "
              "(goal <= 1.15)")

        # 2. in-process overhead of decode + store around the same forward passes
        import torch

        from fakesegment_nb.extract import _extract_local
        from fakesegment_nb.images import load_rgb
        from fakesegment_nb.manifest import build_manifest
        from fakesegment_nb.writer import StoreWriter
        from fakesegment_nb.extract import ExtractResult, store_attrs
        from fakesegment_nb.weights import load_backbone

        backbone, info = load_backbone(MODEL, WEIGHTS[MODEL], device=DEVICE)
        manifest, _ = build_manifest(real, syn)
        arrays = [load_rgb(e.path) for e in manifest]

        def forward_alone() -> float:
            t = time.perf_counter()
            for i in range(0, len(arrays), 8):
                backbone.run(arrays[i:i + 8])
            return time.perf_counter() - t

        def extraction(store) -> float:
            res, w = ExtractResult(store=str(store)), StoreWriter(store)
            t = time.perf_counter()
            with w.locked():
                _extract_local(w, store_attrs(backbone, info), manifest, backbone, 8, res, print, False)
            return time.perf_counter() - t

        # both paths warmed up once (first-use costs: oneDNN kernels, zarr's threads and codecs);
        # then each extraction sits between two forward-only runs and is compared with their mean,
        # so a drift of the machine's speed during the benchmark cancels out of each repeat. The
        # stores are kept until the end: deleting one can leave the kernel freeing (on disks
        # mounted with discard, like ours: trimming) its blocks while the next repeat runs.
        backbone.run(arrays[:8])
        extraction(work / "warm.zarr")
        fwds, loops, overs = [forward_alone()], [], []
        for r in range(args.inproc_repeats):
            store = work / f"inproc{r}.zarr"
            loops.append(extraction(store))
            fwds.append(forward_alone())
            overs.append(loops[-1] / ((fwds[-2] + fwds[-1]) / 2) - 1)
        print(f"in-process: forward passes alone median {statistics.median(fwds):.2f} s, "
              f"decode+forward+store median {statistics.median(loops):.2f} s; "
              f"OVERHEAD median {100 * statistics.median(overs):.1f}% (goal <= 5%); "
              f"per repeat {', '.join(f'{100 * o:.1f}%' for o in overs)}")

        # 3. store size
        import fakesegment_nb as fs

        tree = fs.open_store(store)
        f32 = sum(int(np.prod(fs.feature_layer(tree, l).shape)) * 4 for l in fs.layer_names(tree))
        disk = sum(p.stat().st_size for p in (store / "layers").rglob("*") if p.is_file())
        print(f"store: features on disk {disk / 2**20:.1f} MiB vs float32 {f32 / 2**20:.1f} MiB -> "
              f"SIZE RATIO {disk / f32:.3f} (goal <= 0.25)")

        # 4. one (image, layer, channel) map through open_store
        rng = np.random.default_rng(1)
        ids = list(fs.image_table(tree).index)
        names = fs.layer_names(tree)
        for chunks, label in (({}, "dask chunks (default)"), (None, "chunks=None")):
            t = time.perf_counter()
            tr = fs.open_store(store, chunks=chunks)
            t_open = time.perf_counter() - t
            times = []
            for _ in range(200):
                layer = names[int(rng.integers(len(names)))]
                c = int(rng.integers(fs.feature_layer(tr, layer).sizes["channel"]))
                t = time.perf_counter()
                fs.feature_map(tr, ids[int(rng.integers(len(ids)))], layer, c)
                times.append(time.perf_counter() - t)
            print(f"single map read, {label}: median {1000 * statistics.median(times):.2f} ms, "
                  f"p90 {1000 * np.percentile(times, 90):.2f} ms (goal median <= 10 ms); open_store {1000 * t_open:.0f} ms")

        # 5. peak memory does not grow with the number of images
        real128, syn128 = make_images(work / "img128", 128)
        real, syn = make_images(work / "img32", 32) if n != 32 else (real, syn)
        _, rss32, _ = timed_child(extract_cmd(real, syn, work / "m32.zarr"))
        _, rss128, _ = timed_child(extract_cmd(real128, syn128, work / "m128.zarr"))
        print(f"peak RSS of extract: 32 images {rss32} MiB, 128 images {rss128} MiB -> "
              f"RATIO {rss128 / rss32:.3f} (goal: no growth, ~1.0)")
        print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
