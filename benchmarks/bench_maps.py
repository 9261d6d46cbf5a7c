"""Benchmark of the unrealistic-detail maps on larger probes (issue 4's quality bars).

For each probe -- seed 0 with every artifact kind (the tuning seed), seed 1 with every kind
(not tuned on), and seed 2 with only the kinds held out of tuning -- it builds the probe,
extracts features (default model ssd300_vgg16, seeded random weights random:0, as CI and
`make demo` use), computes both maps and evaluates them and the two pixel baselines. It prints
AUROC / AP / IoU per method and baseline, pixel AUROC per artifact kind, and the seconds per
image the maps take beyond extraction.

    .venv/bin/python benchmarks/bench_maps.py [--n 50] [--work DIR] [--model NAME] [--weights W]

``--n`` pairs per probe (100 images at the default); ``--work`` keeps probes and stores there
(reused when present) instead of a temporary folder. Exits 1 if a quality bar fails on the
tuning probe.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakesegment_nb.evaluate import auroc, baseline_maps, evaluate, format_table, load_masks  # noqa: E402
from fakesegment_nb.extract import extract  # noqa: E402
from fakesegment_nb.maps import compute_maps, read_maps  # noqa: E402
from fakesegment_nb.probe import probe_regions, make_probe  # noqa: E402
from fakesegment_nb.store import image_table  # noqa: E402

PROBES = [("seed 0, all kinds (tuning)", 0, "all"), ("seed 1, all kinds", 1, "all"),
          ("seed 2, held-out kinds only", 2, "heldout")]


def per_kind(store, probe) -> dict[str, dict[str, float]]:
    """Pixel AUROC of each region kind: its pixels against the image's realistic pixels."""
    truth, _ = load_masks(store, probe / "masks")
    regions = probe_regions(probe)
    size = next(iter(truth.values())).shape
    maps = {m: read_maps(store, m) for m in ("paired", "reference")}
    ids = [str(v) for v in maps["paired"]["image"].values]
    pos = {k: i for i, k in enumerate(ids)}
    bmaps, _, _ = baseline_maps(store, list(truth))
    out: dict = defaultdict(lambda: defaultdict(list))
    for img, t in truth.items():
        stem = Path(img).stem
        scores = {m: ds["score"].values[pos[img]] for m, ds in maps.items()}
        scores.update({b: v[img] for b, v in bmaps.items()})
        for r in regions.get(stem, []):
            y0, x0, y1, x1 = r["box"]
            sy, sx = size[0] / 320, size[1] / 320
            box = np.zeros(size, bool)
            box[int(y0 * sy):int(np.ceil(y1 * sy)), int(x0 * sx):int(np.ceil(x1 * sx))] = True
            pos_px = t & box
            sel = pos_px | ~t
            for name, s in scores.items():
                out[r["kind"]][name].append(auroc(s[sel], pos_px[sel]))
    return {k: {n: float(np.nanmean(v)) for n, v in d.items()} | {"regions": len(d["paired"])}
            for k, d in out.items()}


def run(work: Path, n: int, model: str, weights: str):
    results = []
    for label, seed, kinds in PROBES:
        probe = work / f"probe_s{seed}_{kinds}_n{n}"
        store = work / f"store_s{seed}_{kinds}_n{n}_{model}_{weights.replace(':', '')}.zarr"
        if not (probe / "probe.json").is_file():
            make_probe(probe, n=n, seed=seed, kinds=kinds)
        t = time.perf_counter()
        if not (store / "zarr.json").is_file():
            extract(probe / "real", probe / "synthetic", store, model=model, weights=weights, progress=False)
        t_extract = time.perf_counter() - t
        n_img = len(image_table(store))
        t = time.perf_counter()
        res = compute_maps(store, "all")
        t_maps = time.perf_counter() - t
        ev = evaluate(store, probe / "masks")
        kinds_tab = per_kind(store, probe)
        print(f"\n=== {label}: {n} pairs ({n_img} images), {model} weights {weights} ===")
        print(format_table(ev))
        print("pixel AUROC per artifact kind (region pixels vs the image's realistic pixels):")
        names = ["paired", "reference", "pixel_absdiff", "pixel_1-ssim"]
        print("  " + "kind".ljust(17) + "".join(n.rjust(15) for n in names) + "   regions")
        for k, d in sorted(kinds_tab.items()):
            print("  " + k.ljust(17) + "".join(f"{d[n]:15.3f}" for n in names) + f"{d['regions']:10d}")
        per = {m: r.seconds for m, r in res.items()}
        print(f"maps: {t_maps:.1f} s for {n_img} images = {t_maps / n_img:.3f} s/image beyond extraction "
              f"(paired {per.get('paired', 0):.1f} s, reference {per.get('reference', 0):.1f} s, incl. writing); "
              f"extraction {t_extract:.1f} s (0 if reused)")
        results.append((label, ev, t_maps / n_img))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--model", default="ssd300_vgg16")
    ap.add_argument("--weights", default="random:0")
    args = ap.parse_args(argv)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        results = run(args.work, args.n, args.model, args.weights)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-maps-") as d:
            results = run(Path(d), args.n, args.model, args.weights)
    t = results[0][1].table
    bars = {"paired AUROC >= 0.90": t.loc["paired", "auroc"] >= 0.90,
            "paired AUROC >= pixel |diff| + 0.05": t.loc["paired", "auroc"] >= t.loc["pixel_absdiff", "auroc"] + 0.05,
            "reference AUROC >= 0.55": t.loc["reference", "auroc"] >= 0.55,
            "maps <= 0.2 s/image": results[0][2] <= 0.2}
    print("\nquality bars on the tuning probe: " + ", ".join(f"{k}: {'ok' if v else 'FAIL'}" for k, v in bars.items()))
    return 0 if all(bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
