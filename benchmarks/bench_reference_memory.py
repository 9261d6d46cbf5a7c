"""Memory and time of the unpaired ``reference`` maps as the number of real images grows.

Builds (or reuses, under ``--work``) a probe of 800 pairs (seed 3), extracts its 800 real images
and the first 50 synthetic ones with ``--model`` (default efficientnet_lite0, ``--weights auto``),
then for 50, 200 and 800 real images (the first ones by id, always with the same 50 synthetic
images) computes the reference maps in a fresh process per run and prints:

* seconds (fit + score + calibration, not writing);
* the process's peak resident memory, and the same after opening the store (the difference is
  what the maps cost);
* the fitted state: memory-bank rows per fold, its bytes, real patches seen and candidates kept
  (``memory_bank``); the two Gaussians' bytes (``gaussian``);
* the bytes of the maps themselves (score, mask, layer maps: they grow with every scored image,
  real ones included, whatever the distance);
* pixel AUROC / AP of the 50 synthetic images against their ground-truth masks (more real
  images: more real content in the bank).

    .venv/bin/python benchmarks/bench_reference_memory.py [--work DIR] [--reals 50,200,800]
                                                          [--distance memory_bank,gaussian]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_PAIRS = 800
N_SYNTHETIC = 50
SEED = 3


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(work: Path, model: str, weights: str) -> Path:
    from fakesegment_nb.extract import extract
    from fakesegment_nb.probe import make_probe

    probe = work / f"probe_s{SEED}_all_n{N_PAIRS}"
    if not (probe / "probe.json").is_file():
        make_probe(probe, n=N_PAIRS, seed=SEED)
    syn = work / f"mem_synthetic{N_SYNTHETIC}"
    syn.mkdir(exist_ok=True)
    for i in range(N_SYNTHETIC):
        link = syn / f"scene_{i:03d}.png"
        if not link.exists():
            link.symlink_to(probe / "synthetic" / link.name)
    store = work / f"store_mem_real{N_PAIRS}_syn{N_SYNTHETIC}_{model}_{weights.replace(':', '')}.zarr"
    if not (store / "zarr.json").is_file():
        extract(probe / "real", syn, store, model=model, weights=weights, progress=False)
    return store


def one(store: str, n_real: int, distance: str, masks: str) -> dict:
    """Run in a fresh process: the reference maps of ``n_real`` real images and the synthetic ones."""
    from fakesegment_nb.evaluate import load_masks, score_images
    from fakesegment_nb.maps import reference_maps
    from fakesegment_nb.store import image_table, open_store

    tree = open_store(store, chunks=None)
    dom = image_table(tree)["domain"].to_numpy()
    real = np.flatnonzero(dom == "real")[:n_real]
    sub = tree.isel(image=np.sort(np.concatenate([real, np.flatnonzero(dom == "synthetic")])))
    base = _rss_mb()
    t = time.perf_counter()
    maps = reference_maps(sub, distance=distance)
    seconds = time.perf_counter() - t
    peak = _rss_mb()  # before the evaluation below
    ds = maps.dataset.load()  # score and mask (computed when read) once, for the evaluation
    params = json.loads(ds.attrs["params"])
    truth, _ = load_masks(sub, masks)
    ids = [str(v) for v in ds["image"].values]
    pos = {k: ids.index(k) for k in truth}
    quality, _ = score_images("reference", {i: ds["score"].values[p] for i, p in pos.items()}, truth,
                              {i: float(ds["threshold"].values[p]) for i, p in pos.items()})
    out = {"real": int(real.size), "images": int(ds.sizes["image"]), "distance": distance, "seconds": seconds,
           "rss_open_mb": base, "rss_peak_mb": peak,
           "maps_mb": sum(ds[v].nbytes for v in ds.data_vars if "image" in ds[v].dims) / 2**20,
           "auroc": quality["auroc"], "ap": quality["ap"]}
    if distance == "memory_bank":
        out.update(state_mb=(ds["bank"].nbytes + ds["bank_scale"].nbytes) / 2**20, bank_rows=params["bank_sizes"],
                   patches_seen=params["patches_seen"], candidates=params["candidates"])
    else:
        c = [tree["layers"][l]["features"].shape[1] for l in ds.attrs["layers"]]
        out.update(state_mb=2 * sum(k * k + k for k in c) * 8 / 2**20)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--reals", default="50,200,800")
    ap.add_argument("--distance", default="memory_bank,gaussian")
    ap.add_argument("--one", nargs=4, metavar=("STORE", "N_REAL", "DISTANCE", "MASKS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args.one[3])))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-refmem-") as d:
        work = args.work or Path(d)
        work.mkdir(parents=True, exist_ok=True)
        store = build(work, args.model, args.weights)
        print(f"reference maps of {args.model} {args.weights}, {N_SYNTHETIC} synthetic images, "
              f"one fresh process per run")
        print(f"{'distance':12s}{'real':>6s}{'images':>8s}{'seconds':>9s}{'s/image':>9s}{'peak MB':>9s}"
              f"{'maps cost MB':>13s}{'of which maps':>14s}{'state MB':>10s}{'AUROC':>7s}{'AP':>7s}"
              "  bank rows / candidates / patches seen")
        for distance in args.distance.split(","):
            for n in (int(v) for v in args.reals.split(",")):
                masks = work / f"probe_s{SEED}_all_n{N_PAIRS}" / "masks"
                proc = subprocess.run([sys.executable, __file__, "--one", str(store), str(n), distance, str(masks)],
                                      capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr[-2000:])
                    return 1
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                extra = (f"  {r['bank_rows']} / {r['candidates']} / {r['patches_seen']}"
                         if distance == "memory_bank" else "")
                print(f"{distance:12s}{r['real']:6d}{r['images']:8d}{r['seconds']:9.1f}"
                      f"{r['seconds'] / r['images']:9.3f}{r['rss_peak_mb']:9.0f}"
                      f"{r['rss_peak_mb'] - r['rss_open_mb']:13.0f}{r['maps_mb']:14.0f}{r['state_mb']:10.2f}"
                      f"{r['auroc']:7.3f}{r['ap']:7.3f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
