"""Time and peak memory of ``fakesegment maps --method all`` (paired, reference and domain) as the
store grows: issue 17's bar is 1,000 images (efficientnet_lite0, 320 px) in at most 5 minutes on
the 2-core machine, with memory flat from 200 to 1,000 images.

Builds (or reuses, under ``--work``) a probe of 500 pairs (seed 3, every artefact kind) and two
stores of it, efficientnet_lite0 with its packaged ImageNet weights: the first 100 pairs (200
images) and all 500 pairs (1,000 images). For each it runs the command line in a fresh process on
a copy of the store and prints the wall time, the peak resident memory (the child's own ``ru_maxrss``),
and the seconds each method reported; ``--methods`` runs other ``--method`` values too (e.g.
``paired,reference`` for the figure without the domain map).

    .venv/bin/python benchmarks/bench_maps_all.py [--work DIR] [--sizes 200,1000] [--methods all]

Timings depend on the load of the machine: print ``cat /proc/loadavg`` beside them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_PAIRS = 500
SEED = 3


def build(work: Path, pairs: int) -> Path:
    from fakesegment_nb.extract import extract
    from fakesegment_nb.probe import make_probe

    probe = work / f"probe_s{SEED}_all_n{N_PAIRS}"
    if not (probe / "probe.json").is_file():
        make_probe(probe, n=N_PAIRS, seed=SEED)
    store = work / f"store_all_{2 * pairs}.zarr"
    if not (store / "zarr.json").is_file():
        sub = work / f"pairs{pairs}"
        for dom in ("real", "synthetic"):
            (sub / dom).mkdir(parents=True, exist_ok=True)
            for i in range(pairs):
                link = sub / dom / f"scene_{i:03d}.png"
                if not link.exists():
                    link.symlink_to(probe / dom / link.name)
        extract(sub / "real", sub / "synthetic", store, model="efficientnet_lite0", weights="auto", progress=False)
    return store


CHILD = ("import resource, sys; from fakesegment_nb.cli import main; rc = main(sys.argv[1:]); "
         "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")


def run(store: Path, method: str, scratch: Path) -> dict:
    """``fakesegment maps --store COPY --method METHOD`` in a fresh process (the CLI's own ``main``),
    which prints its peak resident memory at the end."""
    copy = scratch / "run.zarr"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy, ignore=lambda d, names: ["maps"] if Path(d) == store else [])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, "maps", "--store", str(copy), "--method", method],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    per = {m: float(s) for m, s in re.findall(r"maps/(\w+): .*\(([\d.]+) s\)", proc.stdout)}
    peak = int(re.search(r"PEAK_KB (\d+)", proc.stdout).group(1))
    return {"wall": wall, "peak_mb": peak / 1024, "methods": per}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--sizes", default="200,1000", help="images per store (pairs x 2), at most 1000")
    ap.add_argument("--methods", default="all")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-maps-all-") as d:
        work = args.work or Path(d)
        work.mkdir(parents=True, exist_ok=True)
        stores = {n: build(work, n // 2) for n in (int(v) for v in args.sizes.split(","))}
        print(f"fakesegment maps, efficientnet_lite0 (ImageNet, packaged), 320 px, probe seed {SEED}; "
              f"load average {open('/proc/loadavg').read().split()[:3]}")
        print(f"{'images':>7s} {'method':>18s} {'wall s':>8s} {'peak MB':>8s}  seconds per method")
        for method in args.methods.split(","):
            for n, store in stores.items():
                r = run(store, method, work)
                print(f"{n:7d} {method:>18s} {r['wall']:8.1f} {r['peak_mb']:8.0f}  "
                      + ", ".join(f"{m} {s:.1f}" for m, s in r["methods"].items()))
        print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
