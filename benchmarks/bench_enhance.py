"""Benchmark of the enhancer (issue 13): does the realism loss close the gap on renders it never saw?

On a probe (default 48 scenes, seed 1; seed 0 is the tuning probe) it splits the scenes in halves
(:func:`fakesegment_nb.enhance.holdout_split`: a scene's real and synthetic image stay together),
trains an enhancer on the training half (its synthetic AND real images) with the default settings
of ``fakesegment enhance train`` (timed), enhances the held-out synthetic images, and extracts two
stores of the held-out half with every layer of the network: before (held-out real + held-out
synthetic) and after (held-out real + enhanced held-out synthetic). It prints per layer FID and
c2st AUROC before and after, marks the layers the enhancer trained on, and the content SSIM
between each enhanced image and its input.

    .venv/bin/python benchmarks/bench_enhance.py [--seed 1] [--n 48] [--steps N] [--layers p3,p4]
                                                 [--work DIR] [--quick] [--second-model]

``--quick``: 16 scenes, 20 steps (a smoke run, not the figures). ``--work`` keeps probes, splits,
enhancers and stores there (probes are reused when present; training and stores are redone).
``--second-model`` also measures with ssd300_vgg16 on seeded random weights (``random:0``): a
labelled smoke figure, not evidence (no second trained network is available offline).

Targets (issue 13): FID on held-out images down by >= 30% in every layer; mean content SSIM >= 0.7;
training <= 5 minutes on a 2-core CPU with the default steps. Exits 1 when one is missed.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakesegment_nb.enhance import (DEFAULT_LAYERS, DEFAULT_MODEL, DEFAULT_STEPS, TrainResult,  # noqa: E402
                                    apply_enhancer, content_ssim, gap_table, holdout_split, load_enhancer,
                                    train_enhancer)
from fakesegment_nb.extract import extract  # noqa: E402
from fakesegment_nb.probe import make_probe  # noqa: E402

ALL_LAYERS = {"efficientnet_lite0": ["p2", "p3", "p4", "p5"]}


def _stores(split, enhanced: Path, work: Path, model: str, weights: str, layers):
    before, after = work / f"before_{model}.zarr", work / f"after_{model}.zarr"
    for s in (before, after):
        shutil.rmtree(s, ignore_errors=True)
    extract(split.heldout_real, split.heldout_synthetic, before, model=model, weights=weights, layers=layers,
            progress=False)
    extract(split.heldout_real, enhanced, after, model=model, weights=weights, layers=layers, progress=False)
    return before, after


def _print_table(df, title):
    print(f"\n{title}")
    print(f"{'layer':<10}{'trained':>8}{'FID before':>12}{'FID after':>11}{'change':>9}"
          f"{'c2st before':>13}{'c2st after':>12}")
    for r in df.itertuples():
        print(f"{r.layer:<10}{'yes' if r.trained else 'no':>8}{r.fid_before:>12.4g}{r.fid_after:>11.4g}"
              f"{r.fid_change:>+9.1%}{r.c2st_before:>13.3f}{r.c2st_after:>12.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="probe seed (0 = the tuning probe)")
    ap.add_argument("--n", type=int, default=48, help="scenes in the probe (half train, half held out)")
    ap.add_argument("--steps", type=int, default=None, help=f"training steps (default {DEFAULT_STEPS})")
    ap.add_argument("--layers", default=",".join(DEFAULT_LAYERS), help="training layers")
    ap.add_argument("--train-seed", type=int, default=0, help="the enhancer's seed")
    ap.add_argument("--content-weight", type=float, default=None)
    ap.add_argument("--paired-weight", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--tone-lr", type=float, default=None)
    ap.add_argument("--grain-lr", type=float, default=None)
    ap.add_argument("--momentum", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--balance", choices=("layer", "term"), default=None)
    ap.add_argument("--mean-weight", type=float, default=None)
    ap.add_argument("--adversarial", type=float, default=None, help="weight of the patch discriminator's term")
    ap.add_argument("--tone-content", type=float, default=None, help="weight of the tone's share of the content term")
    ap.add_argument("--ema", type=float, default=None, help="decay of the weights' moving average")
    ap.add_argument("--exposure", type=int, choices=(0, 1), default=None,
                    help="1: bring every render to the training renders' exposure first (default: the library's)")
    ap.add_argument("--native", type=int, choices=(0, 1), default=None,
                    help="1: enhance whole images at their own resolution in training")
    ap.add_argument("--enhancer", help="measure this enhancer file (trained on this probe's training half "
                    "with the same --seed) instead of training one")
    ap.add_argument("--work", help="keep everything here (default: a temporary folder)")
    ap.add_argument("--quick", action="store_true", help="16 scenes, 20 steps: a smoke run")
    ap.add_argument("--second-model", action="store_true",
                    help="also measure with ssd300_vgg16 random:0 (a smoke figure, not evidence)")
    args = ap.parse_args(argv)
    n, steps = (16, 20) if args.quick else (args.n, args.steps or DEFAULT_STEPS)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-enhance-"))
    probe = work / f"probe_s{args.seed}_n{n}"
    if not (probe / "probe.json").is_file():
        make_probe(probe, n=n, seed=args.seed)
    split = holdout_split(probe / "real", probe / "synthetic", work / f"split_s{args.seed}_n{n}", seed=args.seed)
    layers = [l.strip() for l in args.layers.split(",") if l.strip()]
    extra = {k: v for k, v in (("content_weight", args.content_weight), ("paired_weight", args.paired_weight),
                               ("lr", args.lr), ("batch_size", args.batch_size), ("tone_lr", args.tone_lr),
                               ("grain_lr", args.grain_lr), ("momentum", args.momentum),
                               ("balance", args.balance), ("mean_weight", args.mean_weight),
                               ("adversarial", args.adversarial), ("tone_content", args.tone_content), ("ema", args.ema),
                               ("native", None if args.native is None else bool(args.native)),
                               ("exposure", None if args.exposure is None else bool(args.exposure))) if v is not None}
    load = os.getloadavg()[0]
    t = time.perf_counter()
    if args.enhancer:
        net, meta = load_enhancer(args.enhancer)
        res = TrainResult(net, meta, [{"total": meta["final_loss"]}], Path(args.enhancer), meta["train_seconds"])
        steps, train_s = meta["steps"], meta["train_seconds"]
        if meta["real"] != str(split.train_real):
            print(f"warning: {args.enhancer} was trained on {meta['real']}, not {split.train_real}")
    else:
        res = train_enhancer(split.train_real, split.train_synthetic, work / "enhancer.pt", model=DEFAULT_MODEL,
                             layers=layers, steps=steps, seed=args.train_seed, **extra)
        train_s = time.perf_counter() - t
        load = max(load, os.getloadavg()[0])
    enhanced = work / "enhanced"
    shutil.rmtree(enhanced, ignore_errors=True)
    apply_enhancer(res.path, split.heldout_synthetic, enhanced, progress=False)
    ssim = content_ssim(split.heldout_synthetic, enhanced)
    before, after = _stores(split, enhanced, work, DEFAULT_MODEL, "auto", ALL_LAYERS[DEFAULT_MODEL])
    df = gap_table(before, after, trained_layers=res.meta["layers"])
    print(f"probe seed {args.seed}, {n} scenes: trained on {split.counts['train_synthetic']} synthetic + "
          f"{split.counts['train_real']} real, measured on the other {split.counts['heldout_synthetic']} + "
          f"{split.counts['heldout_real']} (held out)")
    print(f"enhancer: {DEFAULT_MODEL} ({res.meta['weights']}), layers {','.join(res.meta['layers'])}, "
          f"{steps} steps, seed {res.meta['seed']}; {extra or 'default settings'}")
    _print_table(df, f"held-out gap, {DEFAULT_MODEL} ({res.meta['weights']})")
    untrained = df[~df["trained"]]

    def change(rows) -> str:
        return ", ".join(f"{r.layer} {r.fid_change:+.1%}" for r in rows.itertuples()) or "none"

    print(f"\nheadline: FID change in the layers not trained on: {change(untrained)}; "
          f"trained layers: {change(df[df['trained']])}")
    print(f"content SSIM (enhanced vs input): mean {ssim['ssim'].mean():.3f}, min {ssim['ssim'].min():.3f}")
    print(f"training: {train_s:.0f} s for {steps} steps ({train_s / steps:.2f} s/step, incl. loading the network); "
          f"1-minute load average {load:.1f} on {os.cpu_count()} CPUs (the larger of start and end)")
    out = {"seed": args.seed, "n": n, "steps": steps, "layers": res.meta["layers"], "settings": extra,
           "train_seconds": train_s, "load_average": load, "ssim_mean": float(ssim["ssim"].mean()), "ssim_min": float(ssim["ssim"].min()),
           "table": df.to_dict("records"), "loss_first": res.history[0]["total"], "loss_last": res.history[-1]["total"]}
    if args.second_model:
        b2, a2 = _stores(split, enhanced, work, "ssd300_vgg16", "random:0", None)
        d2 = gap_table(b2, a2)
        _print_table(d2, "held-out gap, ssd300_vgg16 (random:0 -- untrained: a smoke figure, not evidence)")
        out["ssd300_random"] = d2.to_dict("records")
    (work / f"bench_enhance_s{args.seed}.json").write_text(json.dumps(out, indent=1, default=float))
    met = {"FID down >= 30% in every layer": bool((df["fid_change"] <= -0.30).all()),
           "mean content SSIM >= 0.7": bool(ssim["ssim"].mean() >= 0.7),
           "training <= 300 s": train_s <= 300}
    print("\ntargets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items()))
    print(f"(work folder: {work})")
    return 0 if all(met.values()) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
