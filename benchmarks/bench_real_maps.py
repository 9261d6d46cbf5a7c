"""Benchmark of the maps on genuine renders (issue 17): the warehouse renders and photos of
``../shared/data/warehouse`` (relative to the repository root; see its PROVENANCE.md), never copied
into the project. Without that folder the benchmark says so and exits 0.

Two constructions per seed, each a store of its own (efficientnet_lite0, packaged ImageNet
weights, ``--weights auto``, 320x320 input as extract resizes every image, or ``--input-size WxH``):

* **composite**: each render (15 domain-randomised + 6 photoreal) gets a rectangle of 25-40% of its
  area from a held-out photo pasted in (the photo resized to cover the render, the rectangle taken
  at the same place); ground truth = the rendered part. The photos pasted are *not* in the store's
  real set.
* **insertion**: the probe's local artefacts (:mod:`fakesegment_nb.probe`: flat shading, banding,
  aliasing, repeated tiles, CG highlights; placed and kept by the probe's own rules) inserted into
  half of the renders; ground truth = the inserted artefacts. The other half stay clean (all-negative
  masks): they count in the pooled AP and IoU, so a map that floods clean renders loses there.

Renders and pasted photos are first resized to 640 pixels on their long side (the working
resolution, twice the network input: the probe's artefacts are sized in pixels and a 1920-px
render would shrink a 4-px staircase below one input pixel); both constructions use it. The 46
photos (42 LOCO + 4 phone) are split by ``--seed`` into the real reference set of the store (30) and
paste sources (16; a different one for each render of a group); which renders get insertions, where rectangles and artefacts go, too.

For each seed it prints pixel AUROC / AP (per image, mean), pooled AP, IoU of the calibrated masks,
and the share of each synthetic image's area the mask covers, for the ``domain`` and ``reference``
maps on both constructions, with AUROC / AP per render group (randomised / photoreal). A row ``reference[real only]`` gives the
reference map without the set's own bank (as before issue 17; computed, not stored). ``--probe``
also runs the probe of the same seed (bench_maps.py's: seed 0 tuning kinds, 1 all, 2 held-out
kinds) and prints its figures beside the warehouse's.

Tuned on seed 0 (the choices in fakesegment_nb/maps/settings.py); report seeds 1 and 2:

    .venv/bin/python benchmarks/bench_real_maps.py --seed 1,2 [--work DIR] [--probe]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "warehouse"
LONG_SIDE = 640
N_REFERENCE = 30  # photos in the store's real set; the others are paste sources
PASTE_AREA = (0.25, 0.40)
INSERT_KINDS = ("flat_shading", "banding", "aliasing", "repeated_tiles", "cg_highlight")
GROUPS = ("randomised", "photoreal")
METHODS = ("domain", "reference")
OLD_REFERENCE = "reference[real only]"  # the reference map without the set's own bank (before issue 17)


def _working(path: Path) -> np.ndarray:
    """An image decoded as extract decodes it (RGB), resized to :data:`LONG_SIDE` on its long side,
    float32 in [0, 1]."""
    from fakesegment_nb.images import load_rgb

    a = load_rgb(path)
    h, w = a.shape[:2]
    s = LONG_SIDE / max(h, w)
    im = Image.fromarray(a).resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    return np.asarray(im).astype(np.float32) / 255.0


def _cover(photo: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``photo`` scaled to cover ``hw`` and centre-cropped to it."""
    h, w = hw
    ph, pw = photo.shape[:2]
    s = max(h / ph, w / pw)
    im = Image.fromarray((photo * 255 + 0.5).astype(np.uint8)).resize((max(w, round(pw * s)), max(h, round(ph * s))),
                                                                         Image.LANCZOS)
    a = np.asarray(im).astype(np.float32) / 255.0
    y0, x0 = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
    return a[y0:y0 + h, x0:x0 + w]


def _save(a: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = a if a.dtype == np.uint8 else (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path, format="PNG")


def split_photos(seed: int) -> tuple[list[Path], list[Path]]:
    """(real reference photos, paste sources), a seeded split of all photos."""
    photos = sorted((DATA / "real").rglob("*.jpg"))
    order = np.random.default_rng([seed, 17]).permutation(len(photos))
    ref = sorted(photos[i] for i in order[:N_REFERENCE])
    return ref, sorted(photos[i] for i in order[N_REFERENCE:])


def renders() -> list[Path]:
    return sorted(p for g in GROUPS for p in (DATA / "synthetic" / g).glob("*.png"))


def build(work: Path, seed: int) -> dict[str, dict]:
    """Write the real set (symlinks to the photos), both constructions and their masks under
    ``work``; returns ``{construction: {"real", "synthetic", "masks", "meta"}}`` (reused when there)."""
    from fakesegment_nb import probe

    out = {}
    ref, paste = split_photos(seed)
    real = work / "real"
    if not real.is_dir():
        for p in ref:
            link = real / p.parent.name / p.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(p)
    for name in ("composite", "insertion"):
        root = work / name
        out[name] = {"real": real, "synthetic": root / "synthetic", "masks": root / "masks",
                     "meta": root / "meta.json"}
    if all(d["meta"].is_file() for d in out.values()):
        return out
    rng = np.random.default_rng([seed, 23])
    items = renders()
    insert_into = set(rng.permutation(len(items))[: len(items) // 2 + len(items) % 2].tolist())
    # each render of a group gets a different paste photo (a photo pasted into two renders of one set
    # would put the same real content into two synthetic images, one of them in the other's training)
    source = {}
    for g in GROUPS:
        members = [i for i, p in enumerate(items) if p.parent.name == g]
        order = rng.permutation(len(paste))
        source.update({i: paste[order[k % len(paste)]] for k, i in enumerate(members)})
    meta = {"composite": [], "insertion": []}
    for i, path in enumerate(items):
        rel = Path(path.parent.name) / path.name
        img = _working(path)
        h, w = img.shape[:2]
        # composite: a rectangle of a held-out photo; truth = the rendered rest
        r = np.random.default_rng([seed, i, 1])
        area = r.uniform(*PASTE_AREA) * h * w
        aspect = np.exp(r.uniform(np.log(0.5), np.log(2.0)))
        rh = int(min(h, round(np.sqrt(area / aspect))))
        rw = int(min(w, round(area / max(rh, 1))))
        y0, x0 = int(r.integers(0, h - rh + 1)), int(r.integers(0, w - rw + 1))
        src = source[i]
        ph = _cover(_working(src), (h, w))
        comp = img.copy()
        comp[y0:y0 + rh, x0:x0 + rw] = ph[y0:y0 + rh, x0:x0 + rw]
        truth = np.ones((h, w), bool)
        truth[y0:y0 + rh, x0:x0 + rw] = False
        _save(comp, out["composite"]["synthetic"] / rel)
        _save(truth.astype(np.uint8) * 255, out["composite"]["masks"] / rel)
        meta["composite"].append({"image": str(rel), "photo": src.name, "box": [y0, x0, y0 + rh, x0 + rw],
                                  "rendered_share": float(truth.mean())})
        # insertion: the probe's artefacts into half of the renders, by the probe's placement rules
        syn = img.copy()
        taken = np.zeros((h, w), bool)
        regs = []
        if i in insert_into:
            r = np.random.default_rng([seed, i, 2])
            want, tries = int(r.integers(1, 4)), 0
            while len(regs) < want and tries < 12 * want:
                tries += 1
                kind = str(INSERT_KINDS[int(r.integers(len(INSERT_KINDS)))])
                m = probe._place(syn.mean(2), taken, kind, r, min(h, w))
                if m is None:
                    continue
                new, am = probe._ARTIFACTS[kind](syn, m, r)
                if am.sum() < 64 or np.abs(new - syn)[am].mean() < 0.03:  # the probe's visibility rule
                    continue
                syn = new.astype(np.float32)
                taken |= am
                regs.append({"kind": kind, "area": int(am.sum())})
        _save(syn, out["insertion"]["synthetic"] / rel)
        _save(taken.astype(np.uint8) * 255, out["insertion"]["masks"] / rel)
        meta["insertion"].append({"image": str(rel), "regions": regs, "inserted_share": float(taken.mean())})
    for name, d in out.items():
        d["meta"].write_text(json.dumps({"seed": seed, "reference_photos": [p.name for p in ref],
                                         "paste_sources": [p.name for p in paste], "images": meta[name]}, indent=1))
    return out


def stores(work: Path, seed: int, model: str = "efficientnet_lite0", weights: str = "auto",
           input_size: tuple[int, int] | None = None) -> dict[tuple, tuple]:
    """``{(construction, group): (store path, masks folder)}`` of ``seed``, built and extracted when
    absent. Each render group is a synthetic set of its own (the maps are fitted per set), in a store
    of its own with the same real photos, as a store holding that set alone. ``input_size``
    ``(H, W)``: extract's (default the model's, 320 x 320)."""
    from fakesegment_nb.extract import extract

    built = build(work, seed)
    out = {}
    for name, d in built.items():
        for group in GROUPS:
            size = "" if input_size is None else f"_{input_size[1]}x{input_size[0]}"
            store = work / f"{name}_{group}_{model}_{weights.replace(':', '')}{size}.zarr"
            if not (store / "zarr.json").is_file():
                extract(d["real"], d["synthetic"] / group, store, model=model, weights=weights, progress=False,
                        input_size=input_size)
            out[name, group] = (store, d["masks"] / group)
    return out


def measure(store: Path, masks: Path) -> tuple[dict, "pd.DataFrame"]:
    """Compute the maps (``all``: reference and domain; the store has no pairs) and evaluate them:
    ``({method: row}, per-image frame)``; each row adds ``area``, the mean share of a synthetic
    image's area its mask covers, and ``seconds``."""
    import pandas as pd

    from fakesegment_nb.evaluate import evaluate, load_masks, score_images
    from fakesegment_nb.maps import compute_maps, read_maps, reference_maps
    from fakesegment_nb.store import image_table

    res = compute_maps(store, "all")
    ev = evaluate(store, masks, baselines=False)
    syn = (image_table(store)["domain"] == "synthetic").to_numpy()
    rows = {}
    for m in METHODS:
        row = ev.table.loc[m].to_dict()
        row["area"] = float(np.asarray(read_maps(store, m)["mask"].values)[syn].mean())
        row["seconds"] = res[m].seconds
        rows[m] = row
    # the reference map before issue 17: the real bank only (not stored)
    t = time.perf_counter()
    alt = reference_maps(store, bank={"set_novelty": False}).dataset.load()
    truth, _ = load_masks(store, masks)
    ids = [str(v) for v in alt["image"].values]
    pos = {k: ids.index(k) for k in truth}
    row, per = score_images(OLD_REFERENCE, {i: alt["score"].values[p] for i, p in pos.items()}, truth,
                            {i: float(alt["threshold"].values[p]) for i, p in pos.items()})
    row["area"] = float(np.asarray(alt["mask"].values)[syn].mean())
    row["seconds"] = time.perf_counter() - t
    rows[OLD_REFERENCE] = row
    return rows, pd.concat([ev.per_image, pd.DataFrame(per)])


def probe_rows(work: Path, seed: int) -> tuple[str, dict]:
    """bench_maps.py's probe of ``seed`` (seed 0: tuning kinds, 1: all, 2: held-out kinds; 50 pairs)
    with all three maps: ``(label, {method: row})``."""
    from bench_maps import PROBES  # noqa: E402 (benchmarks/ is on the path when run as a script)

    from fakesegment_nb.evaluate import evaluate
    from fakesegment_nb.extract import extract
    from fakesegment_nb.maps import compute_maps
    from fakesegment_nb.probe import make_probe

    label, _, kinds = next((p for p in PROBES if p[1] == seed), (f"seed {seed}, all kinds", seed, "all"))
    probe = work / f"probe_s{seed}_{kinds}_n50"
    store = work / f"store_s{seed}_{kinds}_n50_efficientnet_lite0_auto.zarr"
    if not (probe / "probe.json").is_file():
        make_probe(probe, n=50, seed=seed, kinds=kinds)
    if not (store / "zarr.json").is_file():
        extract(probe / "real", probe / "synthetic", store, model="efficientnet_lite0", weights="auto", progress=False)
    compute_maps(store, "all")
    ev = evaluate(store, probe / "masks", baselines=False)
    return label, {m: ev.table.loc[m].to_dict() for m in ("paired", *METHODS)}


def _line(*cells) -> str:
    widths = (14, 12, 22, 8, 8, 10, 7, 7, 8)
    return "".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) and np.isfinite(v) else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", default="1,2", help="comma-separated seeds (0 is the one tuned on)")
    ap.add_argument("--work", type=Path, help="keep images and stores here (reused when present)")
    ap.add_argument("--probe", action="store_true", help="also run the probe of each seed (bench_maps.py's)")
    ap.add_argument("--input-size", metavar="WxH", help="extract's --input-size (default 320x320), e.g. 576x320 "
                    "for the renders' 16:9 (the photos, mostly 4:3, are then stretched the other way)")
    args = ap.parse_args(argv)
    from fakesegment_nb.cli import parse_input_size

    input_size = parse_input_size(args.input_size)
    if not DATA.is_dir():
        print(f"bench_real_maps: {DATA} is not here (the genuine warehouse renders and photos, never copied "
              "into the project); nothing to measure")
        return 0
    import pandas as pd

    print(f"genuine renders and photos from {DATA}; efficientnet_lite0, ImageNet weights (packaged, --weights "
          f"auto), input {args.input_size or '320x320'}; maps tuned on seed 0 (fakesegment_nb/maps/settings.py); pixel AUROC / AP per image (mean)")
    with tempfile.TemporaryDirectory(prefix="bench-real-maps-") as d:
        work = args.work or Path(d)
        for seed in (int(s) for s in args.seed.split(",")):
            t = time.perf_counter()
            built = stores(work / f"s{seed}", seed, input_size=input_size)
            print(f"\n=== seed {seed}{' (tuned on)' if seed == 0 else ''}: 30 real photos in each store; "
                  f"15 randomised + 6 photoreal renders ({time.perf_counter() - t:.0f} s to build and extract) ===")
            print(_line("construction", "renders", "method", "auroc", "ap", "ap_pooled", "iou", "area", "seconds"))
            per_image = {}
            for (name, group), (store, masks) in built.items():
                rows, per = measure(store, masks)
                per_image.setdefault(name, []).append(per)
                for m, r in rows.items():
                    print(_line(name, group, m, *(_fmt(r[k]) for k in ("auroc", "ap", "ap_pooled", "iou", "area")),
                                f"{r['seconds']:.1f}"))
            for name, frames in per_image.items():
                per = pd.concat(frames)
                for m in (*METHODS, OLD_REFERENCE):
                    p = per[per["name"] == m]
                    print(_line(name, "all 21", m, _fmt(float(p["auroc"].mean())), _fmt(float(p["ap"].mean())),
                                "", "", "", ""))
            if args.probe:
                label, rows = probe_rows(work, seed)
                print(f"probe {label} (50 pairs), the same maps:")
                for m, r in rows.items():
                    print(_line("probe", f"s{seed}", m, *(_fmt(r[k]) for k in ("auroc", "ap", "ap_pooled", "iou")), "", ""))
    print("\nheld-out street targets (issue 17): domain AUROC >= 0.95 on composites; reference AUROC >= 0.90 and "
          "AP >= 0.5 on insertions. The warehouse is a proxy: 6 photoreal views of one scene, 15 renders "
          "randomised on purpose.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
