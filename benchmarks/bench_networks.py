"""Three trained networks on genuine warehouse renders: the gap profile and the per-image ranking of
each, and whether they agree (issue 19).

Reads ``../shared/data/warehouse`` (genuine Isaac Sim renders: ``synthetic/randomised``, 15
domain-randomised, and ``synthetic/photoreal``, 6 views of one photoreal scene; genuine photos:
``real/loco``, 42, and ``real/phone``, 4; see its PROVENANCE.md) when it is there, and says so and
exits 0 when it is not. Nothing is copied: the stores go to ``--work`` (default a temporary folder).

For each network (``--models``, default efficientnet_lite0, efficientnet_lite1, efficientnet_lite2,
each with its packaged ImageNet weights, whole images resized to the default 320 x 320) and each
kind of render, it extracts a store of the renders against all 46 photos and prints:

* the gap profile per layer: ``c2st_auroc`` (out-of-fold real-vs-render AUROC) and ``fid_ratio``
  (FID over the real images' own split-half floor), on one scale across networks;
* the per-image ranking: the fused realism score of every render (``images.csv``; 1 = as typical as
  a held-out photo). The two kinds' stores share the same photos, so their scores are on one scale
  and are ranked together (21 renders);
* Spearman's rank correlation (scipy) of the per-image scores between every two networks, over
  the 21 renders and within the randomised kind (15); the photoreal kind (6 views) is too small to
  rank on its own;
* the outside evidence the networks should agree with: domain-randomised renders are built not to
  look real, so they should score as less realistic than the photoreal renders (mean rank of each kind).

    .venv/bin/python benchmarks/bench_networks.py [--work DIR] [--models a,b,c] [--data DIR]

Prints figures; exits 0 (1 only when an extraction fails).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fakesegment_nb.agreement import network_agreement  # noqa: E402
from fakesegment_nb.extract import extract  # noqa: E402
from fakesegment_nb.stats import FUSED, gap_profile, image_scores, write_stats  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "warehouse"
MODELS = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
KINDS = ("randomised", "photoreal")


def build(work: Path, data: Path, model: str) -> dict[str, Path]:
    """``{kind: store}``: each kind of render against every photo (loco and phone)."""
    real = data / "real"  # loco/ and phone/, found recursively
    out = {}
    for kind in KINDS:
        store = work / f"{model}_{kind}.zarr"
        t = time.perf_counter()
        res = extract(real, data / "synthetic" / kind, store, model=model, weights="auto", progress=False,
                      report=lambda msg: None)
        if res.added:
            print(f"  {model}: extracted {res.added} images ({kind} vs photos) in {time.perf_counter() - t:.1f} s "
                  f"({res.weights})")
        write_stats(store)
        out[kind] = store
    return out


def profile_table(stores: dict[str, dict[str, Path]]) -> pd.DataFrame:
    rows = []
    for model, by_kind in stores.items():
        for kind, store in by_kind.items():
            g = gap_profile(store)
            for r in g.itertuples():
                rows.append({"network": model, "renders": kind, "layer": r.layer, "n_real": r.n_real,
                             "n_synthetic": r.n_synthetic, "c2st_auroc": r.c2st_auroc, "c2st_p": r.c2st_p,
                             "fid_ratio": r.fid_ratio, "fid": r.fid})
    return pd.DataFrame(rows)


def scores_table(stores: dict[str, dict[str, Path]]) -> pd.DataFrame:
    """One column per network: the fused score of every render, both kinds ranked together."""
    cols = {}
    for model, by_kind in stores.items():
        parts = []
        for kind, store in by_kind.items():
            s = image_scores(store, FUSED).set_index("image")["score"]
            s.index = [f"{kind}/{Path(i).name}" for i in s.index]
            parts.append(s)
        cols[model] = pd.concat(parts)
    return pd.DataFrame(cols)


def spearman_table(scores: pd.DataFrame) -> pd.DataFrame:
    from scipy.stats import spearmanr

    rows = []
    for a, b in combinations(scores.columns, 2):
        for subset, sel in (("all 21 renders", slice(None)),
                            ("randomised only", scores.index.str.startswith("randomised/"))):
            x = scores.loc[sel, [a, b]].dropna()
            res = spearmanr(x[a], x[b])
            rows.append({"a": a, "b": b, "renders": subset, "n": len(x), "rho": res.statistic, "p": res.pvalue})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    if not (args.data / "synthetic").is_dir() or not (args.data / "real").is_dir():
        print(f"bench_networks: the warehouse renders are not at {args.data} (../shared/data/warehouse); "
              "nothing measured")
        return 0
    print(f"bench_networks: genuine renders and photos from {args.data} (read in place, not copied)")
    warnings.simplefilter("ignore")
    pd.set_option("display.width", 200)
    with tempfile.TemporaryDirectory(prefix="bench-networks-") as d:
        work = args.work or Path(d)
        work.mkdir(parents=True, exist_ok=True)
        stores = {m: build(work, args.data, m) for m in args.models.split(",")}
        prof = profile_table(stores)
        print("\n=== gap profile per network (renders vs 46 photos; ImageNet weights; 320 x 320 input) ===")
        wide = prof.pivot_table(index=["renders", "layer"], columns="network", values=["c2st_auroc", "fid_ratio"])
        print(wide.round(3).to_string())
        print("\n(n per store: " + ", ".join(f"{k} {int(v)} renders" for k, v in
                                           prof.groupby("renders")["n_synthetic"].first().items())
              + f", {int(prof['n_real'].iloc[0])} photos)")
        scores = scores_table(stores)
        ranks = scores.rank(ascending=False)
        print("\n=== per-image ranking: fused realism score (1 = as typical as a held-out photo) and rank "
              "(1 = least realistic of the 21) ===")
        both = pd.concat({"score": scores, "rank": ranks}, axis=1)
        print(both.sort_values(("rank", scores.columns[0])).round(2).to_string())
        print("\nmean rank by kind (outside evidence: randomised renders should rank as less realistic, "
              "i.e. a smaller rank):")
        print(ranks.groupby(ranks.index.str.split("/").str[0]).mean().round(2).to_string())
        print("\n=== Spearman's rank correlation of the per-image scores between networks ===")
        print(spearman_table(scores).round(4).to_string(index=False))
        for kind in KINDS:
            ag = network_agreement([stores[m][kind] for m in stores])
            print(f"\n{kind}: {ag.sentence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
