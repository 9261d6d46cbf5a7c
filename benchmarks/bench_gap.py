"""Benchmark of the gap columns (fid_lo/hi, fid_floor, fid_ratio, c2st_auroc/p) and images.csv.

1. A hand-built store of N images (half real, half synthetic; a 1,024-channel 2x2 layer whose
   synthetic half is shifted) for N = 200 and 2,000: ``compute_stats`` of the layers and images
   tables, and the gap functions alone on the per-image vectors, each in a fresh child process
   (wall seconds; peak RSS from /proc/self/status VmHWM, and its rise over the RSS after the
   imports). The issue asks the peak at 2,000 images to stay within 1.3x of the 200-image one.
2. ``--demo-store PATH --before REF``: ``write_stats(recompute=True)`` on that store with the
   code of git ref REF (exported with ``git archive``) and with this checkout, alternated,
   ``--repeat`` times each: medians side by side (the issue: at most 1.5x slower).

    .venv/bin/python benchmarks/bench_gap.py [--sizes 200,2000] [--demo-store data_cache/demo/store.zarr --before main]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD_GAP = r"""
import json, sys, time
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
import numpy as np, pandas as pd
from fakesegment_nb.writer import StoreWriter
from fakesegment_nb.stats import compute_stats
from fakesegment_nb.store import as_tree
from fakesegment_nb import gap
n, c, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
store = f"{root}/gap_{n}.zarr"
rng = np.random.default_rng(0)
mix = rng.normal(size=(c, c)).astype(np.float32) / np.sqrt(c)
dom = ["real"] * (n // 2) + ["synthetic"] * (n - n // 2)
w = StoreWriter(store)
w.create({"model": "handmade", "weights": "random:0", "weights_trained": False, "input_size": [0, 0],
          "layers": ["f"]}, {"f": (c, 2, 2)})
start = w.reserve(n)
for i in range(0, n, 250):  # bounded memory while writing
    k = min(250, n - i)
    base = rng.normal(size=(k * 4, c)).astype(np.float32) @ mix + 2
    base[:, :8] += 0.3 * np.array([d == "synthetic" for d in dom[i:i + k]]).repeat(4)[:, None]
    w.write_features(start + i, {"f": base.reshape(k, 2, 2, c).transpose(0, 3, 1, 2).astype(np.float16)})
ids = [f"{d}/{i:05d}.png" for i, d in enumerate(dom)]
w.commit(pd.DataFrame({"image": ids, "domain": dom, "path": ids, "pair": "", "height": 1, "width": 1,
                       "sha256": [f"h{i}" for i in range(n)]}))
mode = sys.argv[4]
base = hwm()
t = time.perf_counter()
if mode == "stats":
    tables = compute_stats(store, ("layers", "images"))
    out = tables.layers.iloc[0][["c2st_auroc", "c2st_p", "fid_ratio"]].to_dict()
else:
    tree = as_tree(store)
    v = tree["layers/f/features"].values.astype(np.float64).mean(axis=(2, 3))
    d = np.array(dom)
    base = hwm()
    t = time.perf_counter()
    g = gap.layer_gap(v[d == "real"], v[d == "synthetic"], scores=True)
    out = {**{k: g.columns[k] for k in ("c2st_auroc", "c2st_p", "fid_ratio")}, "permutations": g.extra["permutations"]}
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "peak_kib": hwm(), "base_kib": base, **{k: float(x) for k, x in out.items()}}))
"""

CHILD_STATS = r"""
import json, sys, time
import fakesegment_nb as fs, torch  # noqa: F401 (torch: the pairs table imports it)
t = time.perf_counter()
fs.write_stats(sys.argv[1], recompute=True)
print(json.dumps({"wall_s": time.perf_counter() - t, "where": fs.__file__}))
"""


def child(code: str, args: list, pythonpath: str) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="200,2000")
    p.add_argument("--channels", type=int, default=1024)
    p.add_argument("--demo-store", default=None)
    p.add_argument("--before", default=None, help="git ref of the code before the gap columns")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-gap-") as tmp:
        res = {}
        for mode in ("gap", "stats"):
            for n in sizes:
                r = child(CHILD_GAP, [n, args.channels, tmp, mode], str(ROOT))
                res[(mode, n)] = r
                what = "gap functions on the vectors" if mode == "gap" else "compute_stats(layers, images)"
                print(f"{what:32s} {n:5d} images x {args.channels} ch: wall {r['wall_s']:7.2f} s, "
                      f"peak RSS {r['peak_kib'] / 1024:7.1f} MiB (+{(r['peak_kib'] - r['base_kib']) / 1024:.1f} MiB "
                      f"over {r['base_kib'] / 1024:.1f}); c2st_auroc {r['c2st_auroc']:.3f}, p {r['c2st_p']:.3f}, "
                      f"fid_ratio {r['fid_ratio']:.2f}", flush=True)
            if len(sizes) > 1:
                a, b = res[(mode, sizes[0])], res[(mode, sizes[-1])]
                print(f"  peak RSS ratio {sizes[-1]}/{sizes[0]}: {b['peak_kib'] / a['peak_kib']:.2f} "
                      f"(<= 1.3 asked); ratio of the rises: {(b['peak_kib'] - b['base_kib']) / max(1, a['peak_kib'] - a['base_kib']):.2f}")
        if args.demo_store and args.before:
            old = Path(tmp) / "before"
            old.mkdir()
            arch = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "fakesegment_nb"], check=True,
                                  capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=arch, check=True)
            times = {"before": [], "after": []}
            for _ in range(args.repeat):
                times["before"].append(child(CHILD_STATS, [args.demo_store], str(old))["wall_s"])
                times["after"].append(child(CHILD_STATS, [args.demo_store], str(ROOT))["wall_s"])
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            print(f"write_stats on {args.demo_store}: before ({args.before}) median {b:.2f} s, after {a:.2f} s, "
                  f"ratio {a / b:.2f} (<= 1.5 asked); runs before {[round(x, 2) for x in times['before']]}, "
                  f"after {[round(x, 2) for x in times['after']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
