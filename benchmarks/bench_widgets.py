"""Benchmark of the widgets and of ``fakesegment report`` on a demo-sized store.

1. Widget redraw, per interaction: the median (and max) wall time of each kind of interaction
   after the first (the first reads the store; later ones may hit the small caches, as in real
   use when a person goes back and forth). Explorer: layer, channel, image, alpha, threshold,
   region; Gallery: sort, filter; DomainDashboard: distance metric, channel (violin).
   The issue asks for <= 150 ms per Explorer interaction after the first.
2. ``fakesegment report`` wall time (a fresh process, as a user runs it) and the HTML size.

The store is the demo store (``make demo``: 12 probe pairs at 320 px, SSD300-VGG16) when it
holds statistics and maps; otherwise an equivalent one is built once under ``--workdir``
(``random:0`` weights; statistics and maps computed).

    .venv/bin/python benchmarks/bench_widgets.py [--store PATH] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def demo_store(workdir: Path, store: str | None) -> Path:
    from fakesegment_nb.widgets import StoreView

    candidates = [Path(store)] if store else [REPO / "data_cache/demo/store.zarr", workdir / "store.zarr"]
    for c in candidates:
        if (c / "zarr.json").is_file():
            v = StoreView(c)
            if v.methods() and "stats" in v.tree.children:
                return c
            if store:
                raise SystemExit(f"{c} needs statistics and maps: run `fakesegment stats` and `fakesegment maps`")
    from fakesegment_nb.extract import extract
    from fakesegment_nb.maps import compute_maps
    from fakesegment_nb.probe import make_probe
    from fakesegment_nb.stats import write_stats

    out = workdir / "store.zarr"
    print(f"building a demo-sized store in {out} (12 pairs, 320 px, ssd300_vgg16 random:0) ...", flush=True)
    make_probe(workdir / "probe", n=12, seed=0)
    extract(workdir / "probe/real", workdir / "probe/synthetic", out, weights="random:0", progress=False)
    write_stats(out)
    compute_maps(out, "all")
    return out


def timed(action, repeats: int) -> list[float]:
    """Wall seconds of ``action(i)`` for i in range(repeats): the handler and the redraw it does
    (what the kernel spends; the browser then decodes one PNG per changed panel)."""
    out = []
    for i in range(repeats):
        t = time.perf_counter()
        action(i)
        out.append(time.perf_counter() - t)
    return out


def bench_widgets(store: Path, repeats: int) -> dict:
    from fakesegment_nb.widgets import DomainDashboard, Explorer, Gallery, StoreView

    res = {}
    t = time.perf_counter()
    view = StoreView(store)
    ex = Explorer(view)
    res["explorer_open_s"] = time.perf_counter() - t
    syn = view.images("synthetic")
    layers = view.layers

    def set_(w, v):
        w.value = v

    actions = {
        "explorer.layer": lambda i: set_(ex.layer, layers[(i + 1) % len(layers)]),
        "explorer.channel": lambda i: set_(ex.channel, (i * 7 + 1) % (ex.channel.max + 1)),
        "explorer.image": lambda i: set_(ex.image, syn[(i + 1) % len(syn)]),
        "explorer.alpha": lambda i: set_(ex.alpha, 0.2 + 0.1 * (i % 7)),
        "explorer.threshold": lambda i: set_(ex.threshold, ex.threshold.value * (1.5 if i % 2 else 1 / 1.5)),
        "explorer.region": lambda i: set_(ex.region_x, (10 * (i % 5), 10 * (i % 5) + 60)),
    }
    first = {}
    for name, act in actions.items():
        first[name] = timed(act, 1)[0]  # the first of each kind reads from the store
        res[name] = timed(lambda i, a=act: a(i + 1), repeats)
    t = time.perf_counter()
    g = Gallery(view, k=8)
    res["gallery_open_s"] = time.perf_counter() - t
    g_actions = {"gallery.sort": lambda i: set_(g.sort, g.sort.options[(i + 1) % 3]),
                 "gallery.filter": lambda i: set_(g.filter, ["scene_00", "scene_01", ""][i % 3])}
    for name, act in g_actions.items():
        first[name] = timed(act, 1)[0]
        res[name] = timed(lambda i, a=act: a(i + 1), repeats)
    t = time.perf_counter()
    d = DomainDashboard(view)
    res["dashboard_open_s"] = time.perf_counter() - t
    chans = [v for _, v in d.channel.options[:3]]
    d_actions = {"dashboard.metric": lambda i: set_(d.metric, ["kid", "patch_fd", "fid"][i % 3]),
                 "dashboard.channel": lambda i: set_(d.channel, chans[(i + 1) % len(chans)])}
    for name, act in d_actions.items():
        first[name] = timed(act, 1)[0]
        res[name] = timed(lambda i, a=act: a(i + 1), repeats)
    res["first"] = first
    return res


def bench_report(store: Path, workdir: Path) -> dict:
    out = workdir / "report.html"
    exe = Path(sys.executable).with_name("fakesegment")
    t = time.perf_counter()
    subprocess.run([str(exe), "report", "--store", str(store), "--out", str(out), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"report_wall_s": time.perf_counter() - t, "report_html_bytes": out.stat().st_size,
            "report_html": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="a store with statistics and maps (default: the demo store, else built)")
    ap.add_argument("--workdir", default=str(REPO / "data_cache/bench_widgets"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = demo_store(workdir, args.store)
    res = bench_widgets(store, args.repeats)
    rep = bench_report(store, workdir)
    from fakesegment_nb.widgets import StoreView

    v = StoreView(store)
    print(f"store {store}: {len(v.images('real'))} real / {len(v.images('synthetic'))} synthetic images, "
          f"{v.attrs.get('model')} ({v.attrs.get('weights')}), input {v.input_size[0]}x{v.input_size[1]}")
    print(f"open: Explorer {res['explorer_open_s']:.2f} s, Gallery {res['gallery_open_s']:.2f} s, "
          f"DomainDashboard {res['dashboard_open_s']:.2f} s")
    print(f"{'interaction':22s} {'first ms':>9s} {'median ms':>10s} {'max ms':>8s}  (n={args.repeats} after the first)")
    summary = {}
    for name, times in res.items():
        if not isinstance(times, list):
            continue
        med = statistics.median(times) * 1000
        summary[name] = {"first_ms": res["first"][name] * 1000, "median_ms": med, "max_ms": max(times) * 1000}
        flag = "" if not name.startswith("explorer.") or med <= 150 else "  > 150 ms"
        print(f"{name:22s} {res['first'][name] * 1000:9.1f} {med:10.1f} {max(times) * 1000:8.1f}{flag}")
    print(f"fakesegment report: {rep['report_wall_s']:.1f} s wall, HTML {rep['report_html_bytes'] / 2**20:.2f} MiB "
          f"({rep['report_html']})")
    (workdir / "bench_widgets.json").write_text(json.dumps(
        {"store": str(store), "open_s": {k: res[k] for k in res if k.endswith("_open_s")},
         "interactions": summary, **rep}, indent=1))


if __name__ == "__main__":
    main()
