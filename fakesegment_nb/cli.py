"""The ``fakesegment`` command line (DESIGN.md section 4)."""

from __future__ import annotations

import argparse
import sys
import warnings

from .errors import FakesegmentError, ParameterError

__all__ = ["main", "build_parser", "parse_value", "parse_input_size", "report_parameters", "FLAGS"]


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    """``--input-size WxH`` (e.g. ``640x320``; one number ``N`` means ``NxN``) -> ``(height, width)``,
    the order of the store's ``input_size`` attribute and of the library's ``input_size``."""
    if text is None:
        return None
    parts = text.lower().replace("\u00d7", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2):
        raise ParameterError("input_size", f"{text!r}: give WIDTHxHEIGHT in pixels, e.g. 640x320")
    w, h = sizes if len(sizes) == 2 else sizes * 2
    return h, w


def _extract(args) -> int:
    from .extract import extract

    layers = [l.strip() for l in args.layers.split(",") if l.strip()] if args.layers else None
    res = extract(args.real, args.synthetic, args.store, pairs=args.pairs, model=args.model,
                  weights=args.weights, layers=layers, batch_size=args.batch_size, device=args.device,
                  scheduler=args.scheduler, progress=not args.quiet, set_name=args.set,
                  input_size=parse_input_size(args.input_size))
    print(f"{res.store}: {res.added} images added, {res.already_stored} already stored, "
          f"{len(res.failed)} skipped as unreadable; set {res.set}; weights {res.weights}")
    return 0


def _stats(args) -> int:
    from .stats import write_stats

    tables = write_stats(args.store, args.out, recompute=args.recompute)
    files = "layers.csv, channels.csv, images.csv" + (", pairs.csv" if not tables.pairs.empty else "")
    sets = list(dict.fromkeys(tables.layers["set"]))
    n_layers = tables.layers["layer"].nunique()
    print(f"{args.out}: {files} ({len(sets)} set{'s' * (len(sets) != 1)} ({', '.join(sets)}) x {n_layers} layers, "
          f"{len(tables.pairs)} pair rows); cached in {args.store}/stats")
    return 0


def parse_value(text: str):
    """A ``-p NAME VALUE`` string as a value: int, float, true/false, none, else the string itself.

    Nothing is evaluated: ``"__import__('os')"`` stays that string.
    """
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def report_parameters(pairs) -> dict:
    """``-p NAME VALUE`` pairs as the ``{name: value}`` :func:`fakesegment_nb.report.run_report`
    takes (see :func:`parse_value`; a name given twice keeps its last value)."""
    return {name: parse_value(value) for name, value in pairs or []}


def _report(args) -> int:
    from .report import run_report

    res = run_report(args.store, args.out, report_parameters(args.parameter), progress=not args.quiet)
    print(f"{res.html}: report written ({res.size / 2**20:.1f} MiB, {res.seconds:.0f} s); "
          f"executed notebook (widget state saved, for JupyterLab): {res.notebook}")
    return 0


def _probe(args) -> int:
    from .probe import make_probe

    res = make_probe(args.out, n=args.n, seed=args.seed, kinds=args.kinds, severity=args.severity)
    print(f"{res.out}: {res.n} real/synthetic pairs with {res.regions} unrealistic regions "
          f"(seed {res.seed}; kinds {', '.join(res.kinds)}); real/, synthetic/, masks/, probe.json")
    return 0


def _maps(args) -> int:
    from .maps import compute_maps

    res = compute_maps(args.store, args.method, fpr=args.fpr)
    for name, m in res.items():
        for note in m.notes:
            print(f"fakesegment: note: {note}", file=sys.stderr)
        ds = m.dataset
        scored = int((ds["threshold"].notnull()).sum())
        print(f"{args.store}: maps/{name}: {scored} images scored, mask at fpr {ds.attrs['fpr']:g} "
              f"({m.seconds:.1f} s)")
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate, format_table, write_json

    ev = evaluate(args.store, args.masks, resolution=args.resolution)
    for note in ev.notes:
        print(f"fakesegment: note: {note}", file=sys.stderr)
    print(f"scored at {args.resolution} resolution")
    print(format_table(ev))
    write_json(ev, args.json)
    print(f"written {args.json}")
    return 0


def _enhance_train(args) -> int:
    from .enhance import train_enhancer

    layers = [l.strip() for l in args.layers.split(",") if l.strip()] if args.layers else None
    given = {"layers": layers, "steps": args.steps, "crop": args.crop,  # unset: the library's defaults
             "adversarial": args.adversarial, "exposure": None if args.exposure is None else args.exposure == "on"}
    res = train_enhancer(args.real, args.synthetic, args.out, model=args.model, weights=args.weights,
                         seed=args.seed, device=args.device, batch_size=args.batch_size, progress=not args.quiet,
                         **{k: v for k, v in given.items() if v is not None})
    for note in res.notes:
        print(f"fakesegment: note: {note}", file=sys.stderr)
    m = res.meta
    print(f"{res.path}: enhancer trained on {m['n_synthetic']} synthetic and {m['n_real']} real images, "
          f"{m['steps']} steps in {res.seconds:.0f} s; loss {res.history[0]['total']:.4g} -> "
          f"{res.history[-1]['total']:.4g}; {m['model']} ({m['weights']}) layers {','.join(m['layers'])}, "
          f"{'crops of ' + str(m['crop']) + ' px' if m.get('crop') else 'whole images'}, seed {m['seed']}"
          + (f"; every render brought to exposure key {m['loss']['exposure_key']:.3f}" if m['loss'].get('exposure_key') else ""))
    return 0


def _enhance_apply(args) -> int:
    from .enhance import apply_enhancer

    res = apply_enhancer(args.enhancer, args.images, args.out, progress=not args.quiet)
    for f in res.failed:
        print(f"fakesegment: note: skipped {f}", file=sys.stderr)
    scale = (f"{res.scale[1]}x{res.scale[0]} px (resized {res.resize}), as trained" if res.scale
             else "the images' own resolution")
    print(f"{args.out}: {res.written} enhanced images written ({len(res.failed)} skipped as unreadable); "
          f"enhancer trained with {res.meta.get('model', '?')} ({res.meta.get('weights', '?')}) "
          f"layers {','.join(res.meta.get('layers', []))}; local steps at {scale}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fakesegment", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("extract", help="extract feature maps of real and synthetic images into a store")
    e.add_argument("--real", required=True, help="folder of real images (recursive)")
    e.add_argument("--synthetic", required=True, help="folder of synthetic images (recursive)")
    e.add_argument("--store", required=True, help="store path or fsspec URL (zarr v3)")
    e.add_argument("--set", help="the synthetic set's name (default: the stored set holding this folder's images, "
                                 "else the synthetic folder's name); real images are stored once for all sets")
    e.add_argument("--pairs", help="CSV with columns synthetic,real (default: pair by file stem)")
    e.add_argument("--model", default="ssd300_vgg16",
                   help="ssd300_vgg16 (default), ssdlite320_mobilenet_v3_large, efficientnet_lite0, efficientnet_lite1, "
                        "efficientnet_lite2 (ImageNet-trained, work offline), torchvision:<classifier> or timm:<model>")
    e.add_argument("--layers", help="comma-separated layer names (required for torchvision:<classifier>)")
    e.add_argument("--input-size", metavar="WxH",
                   help="resize every whole image (never cropped) to W x H pixels, e.g. 640x320 for 2:1 frames "
                        "(efficientnet_lite* and timm:<model>; default the model's: 320x320 for efficientnet_lite*); "
                        "stored as input_size [H, W]")
    e.add_argument("--weights", default="auto",
                   help="auto | coco | imagenet | random[:SEED] | FILE (default auto: cached or packaged "
                        "pretrained weights, else random; never downloads)")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    e.add_argument("--scheduler", help="dask.distributed scheduler address to shard extraction over")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_extract)

    s = sub.add_parser("stats", help="domain statistics of a store: layers.csv, channels.csv, pairs.csv")
    s.add_argument("--store", required=True, help="store path or fsspec URL")
    s.add_argument("--out", required=True, help="folder for the CSV files")
    s.add_argument("--recompute", action="store_true", help="ignore the statistics cached in the store")
    s.set_defaults(func=_stats)

    pr = sub.add_parser("probe", help="write the bundled probe set: real/, synthetic/, masks/")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--n", type=int, default=24, help="number of real/synthetic pairs (default 24)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--kinds", default="all",
                    help="artifact kinds: all (default), tuning, heldout or comma-separated names")
    pr.add_argument("--severity", type=float, default=1.0,
                    help="synthetic = real + SEVERITY x (render - real), SEVERITY in [0, 1]: 0 real, 1 the render (default)")
    pr.set_defaults(func=_probe)

    mp = sub.add_parser("maps", help="unrealistic-detail maps and masks into the store (maps/<method>)")
    mp.add_argument("--store", required=True, help="feature store path or fsspec URL")
    mp.add_argument("--method", default="all", choices=["paired", "reference", "domain", "all"],
                    help="paired: against each image's real twin; reference: unusual details (against real "
                         "images and the set's own typical look); domain: where an image looks rendered "
                         "(a patch classifier, real against synthetic); all (default): every method that applies")
    mp.add_argument("--fpr", type=float, default=0.05,
                    help="false-positive rate the mask thresholds are calibrated at (default 0.05)")
    mp.set_defaults(func=_maps)

    ev = sub.add_parser("evaluate", help="score stored maps against ground-truth masks; JSON")
    ev.add_argument("--store", required=True, help="feature store with maps")
    ev.add_argument("--masks", required=True, help="folder of PNG masks named like the synthetic images")
    ev.add_argument("--json", required=True, help="output JSON file")
    ev.add_argument("--resolution", choices=["input", "original"], default="input",
                    help="where to score: input (default; the network input, where the maps are: masks resized "
                         "to it) or original (each mask's own size, the original image's: maps resized onto it)")
    ev.set_defaults(func=_evaluate)

    r = sub.add_parser("report", help="run the report notebook (fakesegment_nb/report.ipynb) on a store and render a self-contained HTML file")
    r.add_argument("--store", required=True, help="store path or fsspec URL")
    r.add_argument("--out", required=True, help="the HTML file to write (the executed notebook goes beside it)")
    r.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a report.ipynb parameter (title, layers, method, top_k); the value is passed as a "
                        "value, never executed")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_report)

    en = sub.add_parser("enhance", help="train an enhancer with the realism loss, or apply one to images")
    esub = en.add_subparsers(dest="action", required=True, metavar="ACTION")
    et = esub.add_parser("train", help="train an enhancer on unpaired real and synthetic folders")
    et.add_argument("--real", required=True, help="folder of real images (recursive)")
    et.add_argument("--synthetic", required=True, help="folder of synthetic images (recursive)")
    et.add_argument("--out", required=True, help="the enhancer file to write (ENHANCER.pt)")
    et.add_argument("--model", default="efficientnet_lite0",
                    help="the network the realism loss runs on (default efficientnet_lite0, ImageNet-trained)")
    et.add_argument("--layers", help="comma-separated training layers (default: every layer, p2,p3,p4,p5 for "
                    "efficientnet_lite0; give p3,p4 to keep p2 and p5 as an independent check)")
    et.add_argument("--weights", default="auto", help="auto | coco | imagenet | random[:SEED] | FILE (default auto)")
    et.add_argument("--steps", type=int, default=None, help="optimisation steps (default 600)")
    et.add_argument("--batch-size", type=int, default=4, help="synthetic images (crops) per step (default 4)")
    et.add_argument("--crop", type=int, default=None,
                    help="train on random CROPxCROP crops at the images' own resolution (at least 32); "
                         "default 0: whole images resized to the network's input size")
    et.add_argument("--adversarial", type=float, default=None,
                    help="weight of a patch discriminator on the network's features, trained alongside "
                         "(default 0: none; docs/loss.md)")
    et.add_argument("--exposure", choices=("on", "off"), default=None,
                    help="on: bring every render to the training renders' exposure before the tone curve (for "
                         "renders lit very differently from each other; docs/loss.md); off (default): as they are")
    et.add_argument("--seed", type=int, default=0, help="same seed and data, same enhancer (default 0)")
    et.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    et.add_argument("--quiet", action="store_true", help="no progress bar")
    et.set_defaults(func=_enhance_train)
    ea = esub.add_parser("apply", help="write enhanced copies of a folder's images (same relative paths)")
    ea.add_argument("--enhancer", required=True, help="an enhancer file from `fakesegment enhance train`")
    ea.add_argument("--images", required=True, help="folder of images to enhance (recursive)")
    ea.add_argument("--out", required=True, help="output folder (not the images folder)")
    ea.add_argument("--quiet", action="store_true", help="no progress bar")
    ea.set_defaults(func=_enhance_apply)
    return p


# Library parameters whose flag is not ``--`` + the name with dashes.
FLAGS: dict[str, str] = {"parameters": "-p",  # run_report's parameters: the report's -p NAME VALUE
                         "set_name": "--set"}  # extract's set_name


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"fakesegment: warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    try:
        return args.func(args) or 0
    except ParameterError as exc:
        print(f"fakesegment: error: {exc.as_flag(FLAGS.get(exc.param))}", file=sys.stderr)
        return 2
    except FakesegmentError as exc:
        print(f"fakesegment: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the file system refuses: an --out that is a file, a --json that is a folder
        where = f": {exc.filename}" if exc.filename else ""
        print(f"fakesegment: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fakesegment: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
