"""Benchmark of the enhancer on genuine renders (issue 20): does it close the gap on warehouse renders
it never saw, against genuine photos?

Data: ``../shared/data/warehouse`` beside the worktree (or ``--data``; see its PROVENANCE.md): renders
under ``synthetic/randomised`` (15 domain-randomised Isaac Sim renders, 960x544) and
``synthetic/photoreal`` (6 views of one photoreal scene, 1920x1080), photos under ``real/`` (LOCO
logistics halls and a few phone photos, 640x480 to 2000x1501). Unpaired: no render shows a photo's
scene. When the folder is absent the benchmark says so and exits 0. The images are read where they
lie (hard-linked into the work folder), never copied into the project.

For each case (``--case``) it splits the renders by scene and the photos by scene with
``holdout_split``'s rule (scenes sorted by relative path, shuffled by ``numpy.random.default_rng(
split_seed)``, the first half rounded for training; done per domain, since no scene is in both), trains
an enhancer with ``fakesegment enhance train``'s defaults on the training renders against the
training photos, enhances the held-out renders, and extracts two stores of the held-out part
(``efficientnet_lite0``, its installed ImageNet weights; no download), every layer: before (held-out
photos + held-out renders) and after (the same photos + the enhanced renders). It prints per layer
FID before and after (``layers.csv``'s ``fid``) and the change, and the content SSIM between each
enhanced render and its input. ``--speed`` also times training on 15 renders of ~1 MP (the
randomised renders enlarged to 1360x771 in the work folder) against the training photos, and
``enhance apply`` on those 15 images (decode, enhance, write PNG), in images per second.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_enhance_warehouse.py [--case randomised|photoreal|all]
        [--split-seed 1] [--train-seed 0] [--speed] [--work DIR] [--steps N] [--lr LR] [--layers p2,p3,p4,p5]
        [--crop 224] [--content-weight W] [--native 0|1] [--balance layer|term] [--mean-weight W]
        [--width W] [--depth D] [--adversarial W] [--tone-content W] [--content-pool K] [--ema D] [--batch-size B] [--quiet]

Split seed 0 is the tuning split; 1 (the default) was not tuned on. The photoreal case holds out 3
of 6 views of one scene: its FID compares 3 renders with the held-out photos and says little alone.
Exit status 1 when a layer's held-out FID rises (the issue's "no layer worse than before"), or with
``--speed`` when training takes more than 600 s or apply runs under 2 images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakesegment_nb.enhance import (DEFAULT_MODEL, apply_enhancer, content_ssim, gap_table,  # noqa: E402
                                    train_enhancer, working_resize)
from fakesegment_nb.extract import extract  # noqa: E402
from fakesegment_nb.manifest import scan_folder  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "warehouse"
LAYERS = ["p2", "p3", "p4", "p5"]
CASES = ("randomised", "photoreal")


def _link(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def split_by_scene(folder: Path, domain: str, out: Path, seed: int, fraction: float = 0.5) -> dict:
    """``holdout_split``'s rule for one domain: ``{"train": Path, "heldout": Path, counts...}``."""
    entries = scan_folder(folder, domain)
    keys = sorted({e.key for e in entries})
    order = np.random.default_rng(seed).permutation(len(keys))
    n_train = min(max(int(round(fraction * len(keys))), 1), len(keys) - 1)
    train = {keys[i] for i in order[:n_train]}
    parts = {p: out / p / domain for p in ("train", "heldout")}
    for d in parts.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    counts = {"train": 0, "heldout": 0}
    for e in entries:
        part = "train" if e.key in train else "heldout"
        _link(e.path, parts[part] / e.image.split("/", 1)[1])
        counts[part] += 1
    return {**parts, "counts": counts, "heldout_keys": sorted(set(keys) - train)}


def _table(df) -> str:
    lines = [f"{'layer':<7}{'trained':>8}{'FID before':>12}{'FID after':>11}{'change':>9}"]
    for r in df.itertuples():
        lines.append(f"{r.layer:<7}{'yes' if r.trained else 'no':>8}{r.fid_before:>12.4g}{r.fid_after:>11.4g}"
                     f"{r.fid_change:>+9.1%}")
    return "\n".join(lines)


def _exposure(meta: dict) -> str:
    key = meta["loss"].get("exposure_key")
    return f"to key {key:.3f}" if key else "off"


def run_case(case: str, data: Path, work: Path, args, train_kw: dict) -> dict:
    root = work / f"{case}_s{args.split_seed}"
    syn = split_by_scene(data / "synthetic" / case, "synthetic", root, args.split_seed)
    real = split_by_scene(data / "real", "real", root, args.split_seed)
    t = time.perf_counter()
    load = os.getloadavg()[0]
    res = train_enhancer(real["train"], syn["train"], root / "enhancer.pt", seed=args.train_seed,
                         progress=not args.quiet, **train_kw)
    train_s = time.perf_counter() - t
    load = max(load, os.getloadavg()[0])
    enhanced = root / "enhanced"
    shutil.rmtree(enhanced, ignore_errors=True)
    apply_enhancer(res.path, syn["heldout"], enhanced, progress=False)
    ssim = content_ssim(syn["heldout"], enhanced)
    stores = {}
    for tag, s in (("before", syn["heldout"]), ("after", enhanced)):
        stores[tag] = root / f"{tag}.zarr"
        shutil.rmtree(stores[tag], ignore_errors=True)
        extract(real["heldout"], s, stores[tag], model=DEFAULT_MODEL, weights="auto", layers=LAYERS, progress=False)
    df = gap_table(stores["before"], stores["after"], trained_layers=res.meta["layers"], c2st=False)
    m = res.meta
    print(f"\n== {case} renders, split seed {args.split_seed}"
          f"{' (the tuning split)' if args.split_seed == 0 else ' (not tuned on)'} ==")
    print(f"trained on {syn['counts']['train']} renders + {real['counts']['train']} photos; measured on the other "
          f"{syn['counts']['heldout']} renders ({', '.join(syn['heldout_keys'])}) + {real['counts']['heldout']} photos")
    print(f"enhancer: {m['model']} ({m['weights']}), layers {','.join(m['layers'])}, "
          f"{'crops of %d px' % m['crop'] if m.get('crop') else 'whole images' + (' at their own resolution' if m.get('native') else ' resized ' + working_resize(m))}, {m['steps']} steps, lr {m['optimizer']['lr']:g}, content weight "
          f"{m['loss']['content_weight']:g}, balance {m['loss'].get('balance', 'layer')}, mean weight "
          f"{m['loss'].get('mean_weight', 1):g}, width {m['enhancer']['width']} depth {m['enhancer']['depth']}, batch {m['optimizer']['batch_size']}, adversarial {m['loss'].get('adversarial', 0):g}, tone content {m['loss'].get('tone_content')}, weights' average decay {m['loss'].get('ema_decay', 0):g}, exposure {_exposure(m)}, seed {m['seed']}; {train_s:.0f} s (load average {load:.1f})")
    print(_table(df))
    print(f"content SSIM (enhanced vs input): mean {ssim['ssim'].mean():.3f}, min {ssim['ssim'].min():.3f}")
    return {"case": case, "split_seed": args.split_seed, "train_seed": args.train_seed, "settings": train_kw,
            "counts": {"synthetic": syn["counts"], "real": real["counts"]}, "heldout": syn["heldout_keys"],
            "table": df.to_dict("records"), "ssim_mean": float(ssim["ssim"].mean()),
            "ssim_min": float(ssim["ssim"].min()), "train_seconds": train_s, "load_average": load}


def run_speed(data: Path, work: Path, args, train_kw: dict) -> dict:
    from PIL import Image

    from fakesegment_nb.images import load_rgb

    root = work / "speed"
    big = root / "synthetic"
    shutil.rmtree(big, ignore_errors=True)
    big.mkdir(parents=True)
    for e in scan_folder(data / "synthetic" / "randomised", "synthetic"):
        Image.fromarray(load_rgb(e.path)).resize((1360, 771), Image.BICUBIC).save(big / Path(e.path).name)
    real = split_by_scene(data / "real", "real", root, args.split_seed)
    n = len(list(big.iterdir()))
    load = os.getloadavg()[0]
    t = time.perf_counter()
    res = train_enhancer(real["train"], big, root / "enhancer.pt", seed=args.train_seed, progress=not args.quiet,
                         **train_kw)
    train_s = time.perf_counter() - t
    out = root / "enhanced"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    written = apply_enhancer(res.path, big, out, progress=False).written
    apply_s = time.perf_counter() - t
    load = max(load, os.getloadavg()[0])
    print(f"\n== speed: {n} renders of 1360x771 ({1360 * 771 / 1e6:.2f} MP) + {real['counts']['train']} photos ==")
    print(f"training: {train_s:.0f} s for {res.meta['steps']} steps (incl. loading the network and the real "
          f"moments); apply: {written} images in {apply_s:.1f} s = {written / apply_s:.2f} images/s (decode, "
          f"enhance, write PNG); 1-minute load average {load:.1f} on {os.cpu_count()} CPUs")
    return {"train_seconds": train_s, "apply_images_per_s": written / apply_s, "n": n, "load_average": load}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help=f"the warehouse folder (default {DATA})")
    ap.add_argument("--case", choices=CASES + ("all",), default="all")
    ap.add_argument("--split-seed", type=int, default=1, help="0 = the tuning split; default 1 (not tuned on)")
    ap.add_argument("--train-seed", type=int, default=0, help="the enhancer's seed")
    ap.add_argument("--speed", action="store_true", help="also time training on 15 renders of ~1 MP and apply")
    ap.add_argument("--work", help="keep splits, enhancers and stores here (default: a temporary folder)")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--lr", type=float, help="Adam's learning rate of the convolutions (default: the library's)")
    ap.add_argument("--layers", help="training layers (default: the library's)")
    ap.add_argument("--crop", type=int, help="training crop (0: whole images; default: the library's)")
    ap.add_argument("--content-weight", type=float)
    ap.add_argument("--native", type=int, choices=(0, 1), help="1: enhance whole images at their own resolution "
                    "in training (default: the library's)")
    ap.add_argument("--balance", choices=("layer", "term"))
    ap.add_argument("--mean-weight", type=float)
    ap.add_argument("--width", type=int, help="the enhancer's hidden channels (default: the library's)")
    ap.add_argument("--depth", type=int, help="the enhancer's convolutions (default: the library's)")
    ap.add_argument("--adversarial", type=float, help="weight of the patch discriminator's term (default: the library's, 0)")
    ap.add_argument("--content-pool", type=int, help="the content term's averaging window (default: the library's)")
    ap.add_argument("--ema", type=float, help="decay of the weights' moving average (default: the library's)")
    ap.add_argument("--batch-size", type=int, help="renders per training step (default: the library's)")
    ap.add_argument("--tone-content", type=float, help="weight of the tone's share of the content term (default: the library's)")
    ap.add_argument("--exposure", type=int, choices=(0, 1), help="1: bring every render to the training renders' exposure first, 0: not (default: the library's)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if not (args.data / "synthetic").is_dir() or not (args.data / "real").is_dir():
        print(f"no warehouse data at {args.data} (see the project's shared data; PROVENANCE.md): nothing measured")
        return 0
    train_kw = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("crop", args.crop), ("content_weight", args.content_weight),
                                  ("balance", args.balance), ("mean_weight", args.mean_weight),
                                  ("width", args.width), ("depth", args.depth), ("adversarial", args.adversarial),
                                  ("tone_content", args.tone_content), ("content_pool", args.content_pool), ("ema", args.ema),
                                  ("batch_size", args.batch_size),
                                  ("exposure", None if args.exposure is None else bool(args.exposure)),
                                  ("native", None if args.native is None else bool(args.native)),
                                  ("layers", args.layers.split(",") if args.layers else None)) if v is not None}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-enhance-warehouse-"))
    work.mkdir(parents=True, exist_ok=True)
    results, ok = {}, True
    for case in (CASES if args.case == "all" else (args.case,)):
        r = run_case(case, args.data, work, args, train_kw)
        results[case] = r
        ok &= all(row["fid_change"] <= 0 for row in r["table"])
    if args.speed:
        s = run_speed(args.data, work, args, train_kw)
        results["speed"] = s
        ok &= s["train_seconds"] <= 600 and s["apply_images_per_s"] >= 2
    (work / f"bench_enhance_warehouse_s{args.split_seed}.json").write_text(json.dumps(results, indent=1, default=float))
    met = "every layer closer (or equal)" + (" and the speed targets met" if args.speed else "")
    print(f"\n{met if ok else 'NOT met: see above'} (work folder: {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
