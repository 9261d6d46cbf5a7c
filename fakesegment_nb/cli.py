"""The ``fakesegment`` command line (DESIGN.md section 4)."""

from __future__ import annotations

import argparse
import sys
import warnings

from .errors import FakesegmentError


def _extract(args) -> int:
    from .extract import extract

    layers = [l.strip() for l in args.layers.split(",") if l.strip()] if args.layers else None
    res = extract(args.real, args.synthetic, args.store, pairs=args.pairs, model=args.model,
                  weights=args.weights, layers=layers, batch_size=args.batch_size, device=args.device,
                  scheduler=args.scheduler, progress=not args.quiet)
    print(f"{res.store}: {res.added} images added, {res.already_stored} already stored, "
          f"{len(res.failed)} skipped as unreadable; weights {res.weights}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fakesegment", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("extract", help="extract feature maps of real and synthetic images into a store")
    e.add_argument("--real", required=True, help="folder of real images (recursive)")
    e.add_argument("--synthetic", required=True, help="folder of synthetic images (recursive)")
    e.add_argument("--store", required=True, help="store path or fsspec URL (zarr v3)")
    e.add_argument("--pairs", help="CSV with columns synthetic,real (default: pair by file stem)")
    e.add_argument("--model", default="ssd300_vgg16",
                   help="ssd300_vgg16 (default), ssdlite320_mobilenet_v3_large or torchvision:<classifier>")
    e.add_argument("--layers", help="comma-separated layer names (required for torchvision:<classifier>)")
    e.add_argument("--weights", default="auto", help="auto | coco | random[:SEED] | FILE (default auto)")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    e.add_argument("--scheduler", help="dask.distributed scheduler address to shard extraction over")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_extract)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"fakesegment: warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    try:
        return args.func(args) or 0
    except FakesegmentError as exc:
        print(f"fakesegment: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fakesegment: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
