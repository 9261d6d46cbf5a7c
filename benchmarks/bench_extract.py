"""Extraction figures: speed against a bare library process doing the same forward passes, store
size, single map read latency, and peak memory at 32 vs 128 images.

Run: .venv/bin/python benchmarks/bench_extract.py [--model ssd300_vgg16|efficientnet_lite0] [--repeats 3]
     [--device cpu|cuda] [--images probe|camera|warehouse] [--work DIR]

ssd300_vgg16 runs with seeded random weights (random:0) against torchvision's SSD backbone;
efficientnet_lite0 with its packaged ImageNet weights (auto) against timm's features_only model
(same arithmetic; the bare process does not load weights).

Images: ``probe`` (default) 320 x 320 PNG crops of scikit-image's photos, all sections;
``camera`` 64 camera-sized images built from the probe (2048 x 1024, half JPEG, half PNG:
:func:`make_camera_images`), the speed comparisons only; ``warehouse`` the genuine photos and
renders in ``../shared/data/warehouse`` (640x480 to 2000x1501 JPEG photos, 960x544 and
1920x1080 PNG renders), speed comparisons only, skipped when the folder is not there. The bare
process is run twice: in the default memory layout (what a plain script does; the RATIO) and in
channels-last layout as fakesegment_nb's backbones run (the stricter RATIO_CL).
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
    real.mkdir(parents=True, exist_ok=True), syn.mkdir(parents=True, exist_ok=True)
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


def make_camera_images(root: Path, n: int = 64) -> tuple[Path, Path]:
    """n camera-sized images (2048 x 1024, 2 MP), half real and half synthetic, half of each JPEG
    (quality 90) and half PNG: two 1024 px probe scenes side by side (the probe's photos with
    sensor grain, and their renders), 16 scenes combined into different pairs."""
    from fakesegment_nb.probe import make_probe

    scenes = 16
    probe = root.parent / f"{root.name}-probe1024"  # beside root: the bare process reads all of root
    if not (probe / "probe.json").exists():
        make_probe(probe, n=scenes, seed=0, size=1024)
    real, syn = root / "real", root / "synthetic"
    real.mkdir(parents=True, exist_ok=True), syn.mkdir(parents=True, exist_ok=True)
    half = n // 2
    for dom, out in (("real", real), ("synthetic", syn)):
        tiles = [np.asarray(Image.open(probe / dom / f"scene_{i:03d}.png").convert("RGB")) for i in range(scenes)]
        for i in range(half):
            a, b = tiles[i % scenes], tiles[(i + 1 + i // scenes) % scenes]
            im = Image.fromarray(np.concatenate([a, b], axis=1))
            if i % 2:
                im.save(out / f"img_{i:03d}.jpg", quality=90)
            else:
                im.save(out / f"img_{i:03d}.png")
    return real, syn


def fresh(store: Path) -> Path:
    """``store``, deleted if an earlier run left it (with --work)."""
    shutil.rmtree(store, ignore_errors=True)
    return store


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


def warehouse_images(root: Path) -> tuple[Path, Path] | None:
    """The genuine warehouse photos and renders, linked into ``root`` (None if not there)."""
    src = HERE.parent.parent / "shared" / "data" / "warehouse"
    if not (src / "real").is_dir():
        return None
    real, syn = root / "real", root / "synthetic"
    for sub, out in (("real", real), ("synthetic", syn)):
        out.mkdir(parents=True, exist_ok=True)
        for p in sorted((src / sub).rglob("*")):
            if p.suffix.lower() in (".png", ".jpg", ".jpeg") and not (out / f"{p.parent.name}_{p.name}").exists():
                (out / f"{p.parent.name}_{p.name}").symlink_to(p)
    return real, syn


def compare_processes(real: Path, syn: Path, both: Path, work: Path, repeats: int, label: str) -> None:
    """Whole processes, alternated: extract CLI, bare process, bare process in channels-last."""
    cli, bare, bare_cl, bare_fwd = [], [], [], []
    stores = [fresh(work / f"s{r}.zarr") for r in range(repeats)]  # kept until the end (see section 2)
    for r, store in enumerate(stores):
        cli.append(timed_child(extract_cmd(real, syn, store))[0])
        wall, _, out = timed_child([PY, str(HERE / "_bare_forward.py"), str(both), "8", MODEL, DEVICE])
        bare.append(wall)
        bare_fwd.append(float(out.split("forward_s=")[1]))
        bare_cl.append(timed_child([PY, str(HERE / "_bare_forward.py"), str(both), "8", MODEL, DEVICE,
                                    "channels_last"])[0])
    n = sum(1 for _ in real.iterdir()) + sum(1 for _ in syn.iterdir())
    lib = "torchvision" if MODEL == "ssd300_vgg16" else "timm"
    med = statistics.median
    print(f"extract CLI, {n} images {label}, {MODEL} ({WEIGHTS[MODEL]}, {DEVICE}): median "
          f"{med(cli):.2f} s = {n / med(cli):.1f} images/s whole process (runs {', '.join(f'{x:.2f}' for x in cli)})")
    print(f"bare {lib} process (import, build, decode, forward): median {med(bare):.2f} s "
          f"(runs {', '.join(f'{x:.2f}' for x in bare)}); its forward passes alone: median {med(bare_fwd):.2f} s = "
          f"{n / med(bare_fwd):.1f} images/s; in channels-last layout: median {med(bare_cl):.2f} s "
          f"(runs {', '.join(f'{x:.2f}' for x in bare_cl)})")
    print(f"RATIO extract CLI / bare {lib} process = {med(cli) / med(bare):.3f} (goal <= 1.15); "
          f"RATIO_CL (bare in channels-last) = {med(cli) / med(bare_cl):.3f}; load {os.getloadavg()[0]:.1f}")


def main():
    global MODEL, DEVICE
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the CLI comparison")
    ap.add_argument("--inproc-repeats", type=int, default=6, help="repeats of the in-process comparison")
    ap.add_argument("--model", default=MODEL, choices=sorted(WEIGHTS))
    ap.add_argument("--n", type=int, default=32, help="images of the speed comparisons (default 32)")
    ap.add_argument("--device", default=DEVICE, help="cpu or cuda (both processes run there)")
    ap.add_argument("--images", default="probe", choices=("probe", "camera", "warehouse"),
                    help="probe: 320 px crops, all sections (default); camera: 64 2048x1024 JPEG/PNG images "
                         "made from the probe; warehouse: ../shared/data/warehouse (speed only)")
    ap.add_argument("--work", help="folder for the images and stores (kept; camera images are reused)")
    args = ap.parse_args()
    MODEL, DEVICE = args.model, args.device
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-extract-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.images != "probe":
            if args.images == "camera":
                folder = work / "camera"
                if not (folder / "synthetic").is_dir():
                    make_camera_images(folder)
                pair, label = (folder / "real", folder / "synthetic"), "2048x1024 (half JPEG, half PNG)"
            else:
                folder = work / "warehouse"
                pair, label = warehouse_images(folder), "of ../shared/data/warehouse (JPEG photos, PNG renders)"
                if pair is None:
                    print("../shared/data/warehouse is not here: the warehouse comparison is skipped")
                    return
            compare_processes(*pair, folder, work / "stores", args.repeats, label)
            return
        n = args.n
        real, syn = make_images(work / "imgs", n)
        compare_processes(real, syn, work / "imgs", work, args.repeats, "320x320")

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
        extraction(fresh(work / "warm.zarr"))
        fwds, loops, overs = [forward_alone()], [], []
        for r in range(args.inproc_repeats):
            store = fresh(work / f"inproc{r}.zarr")
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
        _, rss32, _ = timed_child(extract_cmd(real, syn, fresh(work / "m32.zarr")))
        _, rss128, _ = timed_child(extract_cmd(real128, syn128, fresh(work / "m128.zarr")))
        print(f"peak RSS of extract: 32 images {rss32} MiB, 128 images {rss128} MiB -> "
              f"RATIO {rss128 / rss32:.3f} (goal: no growth, ~1.0)")
        print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
