"""How the maps' per-model settings of the EfficientNet-Lites were chosen (maps/settings.py), and
what they give where they were not chosen.

On the tuning probe (seed 0, tuning kinds; ``--n`` pairs), for each ``--models`` network with its
packaged ImageNet weights at each ``--sizes`` input side, it prints pixel AUROC / AP of:

* paired, per layer and component (1 - SSIM alone, squared difference alone), then the best points
  of a search over layer weights ({0, 1} per layer, then each layer of the three best moved to
  0.5) x component mixes (SSIM 1 with squared difference 0, 0.5 or 1; squared difference alone),
  fused as ``paired_maps`` fuses them (each component over
  its median, layers upsampled and averaged with their weights) -- the same arithmetic, computed
  from the per-layer maps of two ``paired_maps`` runs instead of one run per grid point;
* reference (memory bank, centred features), per layer set, with lite0's three steps on top
  (density 9, location median, smoothing 1.5 cells) and without them.

``--check`` instead runs ``compute_maps`` with the settings now in maps/settings.py on seed 1
(all kinds) and seed 2 (held-out kinds) -- probes not tuned on -- and prints ``evaluate``'s table
(``--check-seeds 0`` runs it on the tuning probe, e.g. to compare input sizes). ``--classify``
prints what each network makes of five scikit-image photos at its native size and ``--sizes``.

    .venv/bin/python benchmarks/bench_lite_maps.py [--models efficientnet_lite1,efficientnet_lite2]
        [--sizes 320] [--n 50] [--work DIR] [--check [--check-seeds 1,2]] [--classify]

``--work`` keeps probes and stores (reused when present). Exits 0; it prints figures, not targets.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakesegment_nb.evaluate import evaluate, format_table, load_masks, score_images  # noqa: E402
from fakesegment_nb.extract import extract  # noqa: E402
from fakesegment_nb.lite import LITE  # noqa: E402
from fakesegment_nb.maps import compute_maps, paired_maps, reference_maps  # noqa: E402
from fakesegment_nb.maps.group import fuse  # noqa: E402
from fakesegment_nb.probe import make_probe  # noqa: E402

LAYERS = ["p2", "p3", "p4", "p5"]
STEPS = {"density": 9, "location": True, "smooth": 1.5}
NO_STEPS = {"density": 0, "location": False, "smooth": 0.0}


def probe_and_store(work: Path, seed: int, kinds: str, n: int, model: str, side: int) -> tuple[Path, Path]:
    probe = work / f"probe_s{seed}_{kinds}_n{n}"
    if not (probe / "probe.json").is_file():
        make_probe(probe, n=n, seed=seed, kinds=kinds)
    store = work / f"store_s{seed}_{kinds}_n{n}_{model}_{side}.zarr"
    t = time.perf_counter()
    res = extract(probe / "real", probe / "synthetic", store, model=model, weights="auto", progress=False,
                  input_size=(side, side))  # resumable: what is stored is kept
    if res.added:
        print(f"  extracted {res.added} images into {store.name} in {time.perf_counter() - t:.1f} s")
    return probe, store


def _metrics(name, ds_or_scores, truth) -> tuple[float, float]:
    if isinstance(ds_or_scores, dict):
        scores = ds_or_scores
    else:
        ids = [str(v) for v in ds_or_scores["image"].values]
        pos = {k: i for i, k in enumerate(ids)}
        scores = {i: ds_or_scores["score"].values[pos[i]] for i in truth if i in pos}
    row, _ = score_images(name, scores, truth, 0.0)
    return row["auroc"], row["ap"]


def tune_paired(store, truth) -> list[tuple]:
    """Per-layer, per-component AUROC / AP and the best grid points."""
    ones = dict.fromkeys(LAYERS, 1.0)
    comp_maps = {}
    for comp in ("ssim", "sq"):
        ds = paired_maps(store, weights=ones, components={comp: 1.0}).dataset.load()
        ids = [str(v) for v in ds["image"].values]
        keep = [i for i, k in enumerate(ids) if k in truth and np.isfinite(ds["score"].values[i]).any()]
        comp_maps[comp] = {l: ds[f"layer_{l}"].values[keep] for l in LAYERS}
        order = [ids[i] for i in keep]
    size = next(iter(truth.values())).shape
    sub = {i: truth[i] for i in order}
    print("  paired, per layer (AUROC / AP):   " + "".join(f"{l:>15}" for l in LAYERS))
    for comp in ("ssim", "sq"):
        cells = []
        for l in LAYERS:
            fused = fuse({l: comp_maps[comp][l]}, {l: 1.0}, size)
            cells.append("%.3f / %.3f" % _metrics(l, dict(zip(order, fused)), sub))
        print(f"    {('1 - SSIM' if comp == 'ssim' else 'squared diff'):<30}" + "".join(f"{c:>15}" for c in cells))
    mixes = [(1.0, 0.0), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]
    done: dict = {}

    def point(lw, mix):
        key = (tuple(lw), mix)
        if key not in done:
            w = dict(zip(LAYERS, lw))
            cs, cq = mix
            layer_maps = {l: (cs * comp_maps["ssim"][l] + cq * comp_maps["sq"][l]) / (cs + cq)
                          for l in LAYERS if w[l] > 0}
            fused = fuse(layer_maps, w, size)
            done[key] = (*_metrics("paired", dict(zip(order, fused)), sub), w, {"ssim": cs, "sq": cq})
        return done[key]

    # layer weights {0, 1} x every mix, then each layer of the best few moved to 0.5 (the whole
    # {0, 0.5, 1} grid costs 5x more; on lite0 its best point differed from this search's by < 0.001)
    for lw in itertools.product([0.0, 1.0], repeat=len(LAYERS)):
        if any(lw):
            for mix in mixes:
                point(lw, mix)
    for r in sorted(done.values(), key=lambda r: -r[0])[:3]:
        base = [r[2][l] for l in LAYERS]
        for j in range(len(LAYERS)):
            lw = list(base)
            lw[j] = 0.5
            if any(lw):
                point(lw, (r[3]["ssim"], r[3]["sq"]))
    point([1.0, 1.0, 1.0, 0.0], (1.0, 0.5))  # lite0's choice
    results = sorted(done.values(), key=lambda r: -r[0])
    print("  paired, best grid points (layer weights, components: AUROC / AP):")
    for auc, ap, w, c in results[:6]:
        print(f"    {w}  {c}: {auc:.4f} / {ap:.3f}")
    lite0 = next(r for r in results if r[2] == {"p2": 1.0, "p3": 1.0, "p4": 1.0, "p5": 0.0}
                 and r[3] == {"ssim": 1.0, "sq": 0.5})
    print(f"    lite0's choice (p2 + p3 + p4, SSIM 1 + sq 0.5): {lite0[0]:.4f} / {lite0[1]:.3f}")
    return results


def tune_reference(store, truth) -> None:
    sets = [("p3", "p4"), ("p2", "p3"), ("p3",), ("p4",), ("p2", "p3", "p4"), ("p3", "p4", "p5")]
    print("  reference (memory bank, centred), AUROC / AP, bank seed 0:   with lite0's steps   without")
    for s in sets:
        w = {l: (1.0 if l in s else 0.0) for l in LAYERS}
        cells = []
        for steps in (STEPS, NO_STEPS):
            ds = reference_maps(store, weights=w, distance="memory_bank", centre=True,
                                bank={"grid": "p3" if "p3" in s else s[0], **steps}).dataset.load()
            cells.append("%.3f / %.3f" % _metrics("reference", ds, truth))
        print(f"    {'+'.join(s):<50}{cells[0]:>18}{cells[1]:>18}")


PROBES = {0: "tuning", 1: "all", 2: "heldout"}


def check(work: Path, n: int, model: str, side: int, seeds=(1, 2)) -> None:
    for seed in seeds:
        kinds = PROBES[seed]
        probe, store = probe_and_store(work, seed, kinds, n, model, side)
        compute_maps(store, "all")
        tuned = "tuned on" if seed == 0 else "not tuned on"
        print(f"\n=== {model} ({LITE[model].label}), {side} px: seed {seed}, {kinds} kinds ({tuned}), "
              f"{n} pairs ===")
        print(format_table(evaluate(store, probe / "masks")))


PHOTOS = {"chelsea": (281, 286), "coffee": (967, 968), "astronaut": None, "rocket": None, "hubble_deep_field": None}


def classify(models, sizes) -> None:
    """Top-1 class (probability) of five whole scikit-image photos resized to each size (timm's
    transform with ``crop_pct=1``, squash), and the probability of the expected classes (chelsea:
    the cat classes 281-285, coffee: espresso 967)."""
    import timm.data
    import torch
    from PIL import Image
    from skimage import data

    from fakesegment_nb.weights import load_backbone

    for model in models:
        bb, info = load_backbone(model, "auto")
        net = bb.model.float().to(memory_format=torch.contiguous_format).eval()
        cfg = timm.data.resolve_data_config({}, model=net)
        print(f"\n=== {model} ({info.label}), native {cfg['input_size'][-1]} px: top-1 class (probability), "
              "expected classes' probability ===")
        for size in dict.fromkeys([cfg["input_size"][-1], *sizes]):
            c = dict(cfg)
            c.update(input_size=(3, size, size), crop_pct=1.0, crop_mode="squash")
            t = timm.data.create_transform(**c)
            row = []
            for name, cls in PHOTOS.items():
                a = getattr(data, name)()
                a = a[:, :, :3] if a.ndim == 3 else np.repeat(a[:, :, None], 3, 2)
                with torch.no_grad():
                    p = net(t(Image.fromarray(a))[None]).softmax(1)[0]
                top = int(p.argmax())
                row.append(f"{name} {top} ({float(p[top]):.2f})" + (f", expected {float(p[cls[0]:cls[1]].sum()):.2f}"
                                                                    if cls else ""))
            print(f"  {size} px: " + "; ".join(row))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="efficientnet_lite1,efficientnet_lite2")
    ap.add_argument("--sizes", default="320", help="comma-separated input sides")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--check", action="store_true", help="the chosen settings on seeds 1 and 2")
    ap.add_argument("--check-seeds", default="1,2", help="the probes --check runs: 0 (tuning kinds), 1 (all), "
                    "2 (held-out kinds)")
    ap.add_argument("--classify", action="store_true", help="only the classification of five photos at "
                    "the native size and --sizes")
    args = ap.parse_args(argv)
    if args.classify:
        classify(args.models.split(","), [int(x) for x in args.sizes.split(",")])
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-lite-maps-") as d:
        work = args.work or Path(d)
        work.mkdir(parents=True, exist_ok=True)
        for model in args.models.split(","):
            for side in (int(s) for s in args.sizes.split(",")):
                if args.check:
                    check(work, args.n, model, side, [int(x) for x in args.check_seeds.split(",")])
                    continue
                probe, store = probe_and_store(work, 0, "tuning", args.n, model, side)
                truth, _ = load_masks(store, probe / "masks")
                print(f"\n=== {model} ({LITE[model].label}), {side} px input: seed 0, tuning kinds (tuned on), "
                      f"{args.n} pairs ===")
                tune_paired(store, truth)
                tune_reference(store, truth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
