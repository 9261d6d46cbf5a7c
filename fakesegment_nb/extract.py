"""Feature extraction: images -> backbone -> float16 rows in the store.

The work overlaps in threads: the files are hashed (for the manifest) while the network loads;
each image is decoded and put through the network's own preprocessing (:meth:`Backbone.preprocess`,
one image at a time: the batch is the one :meth:`Backbone.run` would make) in a pool of decoding
threads, a bounded window ahead; the main thread runs only the forward passes; a writer thread
compresses and writes the features. Written batches are committed together every COMMIT_EVERY_S
seconds and at the end, so an interrupted run loses at most that much work plus the batch in
flight, and a rerun skips every image already stored (real images by sha256, synthetic ones by
sha256 within their set).

Not done, measured: PIL's JPEG draft mode (decoding a 2048 x 1024 JPEG at half size, still above
the 320 px input, then resizing) is ~1.5x faster to decode, but the network input differs by up to
~5 of 255 levels and efficientnet_lite0's features by ~5% on average (float16 rounding: 0.02%),
on 16 JPEGs of benchmarks/bench_extract.py's camera images: the features would no longer be the
model's on the decoded image (DESIGN.md section 3).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from . import __version__
from .backbones import DEFAULT_MODEL, Backbone
from .errors import FakesegmentError, ImageError, ParameterError
from .images import load_rgb
from .manifest import Entry, build_manifest, image_files
from .sets import check_set_name, choose_set, place_set, real_pairs
from .schema import image_rows
from .writer import StoreWriter
from .weights import WeightsInfo, load_backbone

__all__ = ["extract", "ExtractResult", "store_attrs", "float16_problems", "COMMIT_EVERY_S"]


# A commit (7 root arrays and the marker) costs ~40 ms of CPU here: once per CPU batch (~2.5 s
# for ssd300) it is 1.5% of the run, once per GPU batch it would rival the forward pass.
COMMIT_EVERY_S = 5.0


@dataclass
class ExtractResult:
    store: str
    added: int = 0
    already_stored: int = 0
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    weights: str = ""
    set: str = ""  # the synthetic set this run added to
    timings: dict[str, float] = field(default_factory=dict)


def store_attrs(backbone: Backbone, info: WeightsInfo) -> dict:
    from importlib.metadata import version  # timm's version without importing it (0.5 s an SSD run needs not)

    import torchvision

    return {"model": backbone.name, "weights": info.label, "weights_trained": bool(info.trained),
            "weights_warning": info.warning, "input_size": list(backbone.input_size),
            "layers": list(backbone.layers), "preprocessing": backbone.preprocessing, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": version("timm"), "fakesegment_nb": __version__}


def float16_problems(half: dict[str, np.ndarray], full: dict[str, np.ndarray] | None = None) -> list[str]:
    """Layers whose activations float16 cannot hold: overflow to inf, or most of them flushed to 0.

    Random initialisations of some networks (ssdlite's) shrink activations below float16's
    smallest value, which would leave an all-zero store without a word.
    """
    out = []
    for name, h in half.items():
        if not np.isfinite(h).all():
            out.append(f"layer {name}: some activations overflow float16 (stored as inf)")
        elif full is not None:
            nonzero = full[name] != 0
            lost = np.count_nonzero(nonzero & (h == 0)) / max(1, np.count_nonzero(nonzero))
            if lost > 0.5:
                out.append(f"layer {name}: {100 * lost:.0f}% of its non-zero activations underflow float16 "
                           f"(largest {np.abs(full[name]).max():.1e}); these weights give it no usable signal")
    return out


def _decoded_batches(entries: Sequence[Entry], batch_size: int, report: Callable[[str], None],
                     failed: list[str], prepare: Callable[[np.ndarray], object] | None = None,
                     workers: int = 2) -> Iterator[tuple[list[Entry], list[tuple[int, int]], list]]:
    """Decode ahead in threads (a bounded window) and yield batches of ``batch_size`` good images:
    their entries, decoded ``(height, width)`` and ``prepare(decoded RGB array)`` (the array itself
    by default), ``prepare`` running in the decoding threads too."""

    def load(e: Entry):
        try:
            arr = load_rgb(e.path)
        except ImageError as exc:
            return e, None, exc
        return e, arr.shape[:2], (arr if prepare is None else prepare(arr))

    window = max(2 * batch_size, 4)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        it = iter(entries)
        batch_e, batch_s, batch_a = [], [], []
        while True:
            while len(pending) < window:
                nxt = next(it, None)
                if nxt is None:
                    break
                pending.append(pool.submit(load, nxt))
            if not pending:
                break
            e, size, res = pending.popleft().result()
            if isinstance(res, ImageError):
                report(f"skipped unreadable image {res}")
                failed.append(e.image)
                continue
            batch_e.append(e)
            batch_s.append(size)
            batch_a.append(res)
            if len(batch_e) == batch_size:
                yield batch_e, batch_s, batch_a
                batch_e, batch_s, batch_a = [], [], []
        if batch_e:
            yield batch_e, batch_s, batch_a


def _run_prepared(backbone: Backbone, inputs: list, keep_float32: bool = False):
    """:meth:`Backbone.run` on images already through :meth:`Backbone.preprocess` one by one (in
    the decoding threads): the batch is the one ``run`` would make (every model's preprocessing
    treats each image on its own), and so are the float16 features."""
    with torch.inference_mode():
        feats = backbone.features(torch.cat(inputs))
        half = {k: v.to(dtype=torch.float16, memory_format=torch.contiguous_format).cpu().numpy()
                for k, v in feats.items()}
        if keep_float32:
            return half, {k: v[:1].float().cpu().numpy() for k, v in feats.items()}
        return half


class _Writer(threading.Thread):
    """Consumes (entries, sizes, features), writes them in order and commits every ``commit_every_s``.

    Rows for all ``total`` images are reserved once; what failed to decode is trimmed at the end.
    """

    def __init__(self, writer: StoreWriter, attrs: dict, progress, total: int,
                 commit_every_s: float | None = None):
        super().__init__(name="store-writer", daemon=True)
        self.writer, self.attrs, self.progress, self.total = writer, attrs, progress, total
        self.commit_every_s = COMMIT_EVERY_S if commit_every_s is None else commit_every_s
        self.next_row: int | None = None
        self.written: list[pd.DataFrame] = []  # root rows of written, not yet committed batches
        self.last_commit = time.perf_counter()
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.busy_s = 0.0

    def run(self):
        while True:
            item = self.q.get()
            if self.error is not None:
                if item is None:
                    return
                continue
            t = time.perf_counter()
            try:
                if item is None:  # the end, or the main thread gave up: keep what is written
                    self._commit()
                    self.busy_s += time.perf_counter() - t
                    return
                entries, sizes, feats = item
                if self.next_row is None:
                    if not self.writer.exists():
                        self.writer.create(self.attrs, {k: v.shape[1:] for k, v in feats.items()})
                    self.next_row = self.writer.reserve(self.total)
                self.writer.write_features(self.next_row, feats)
                self.next_row += len(entries)
                self.written.append(image_rows(entries, sizes))
                if time.perf_counter() - self.last_commit >= self.commit_every_s:
                    self._commit()
                self.busy_s += time.perf_counter() - t
                self.progress.update(len(entries))
            except BaseException as exc:  # surfaced by the main thread
                self.error = exc

    def _commit(self):
        if self.written:
            self.writer.commit(pd.concat(self.written, ignore_index=True))
            self.written = []
        self.last_commit = time.perf_counter()

    def put(self, item):
        if self.error is not None:
            raise self.error
        self.q.put(item)


class _Background(threading.Thread):
    """``fn(*args)`` in a daemon thread (an error elsewhere need not wait for it); :meth:`result`
    joins it and returns what it returned, or raises what it raised."""

    def __init__(self, fn, *args):
        super().__init__(name=getattr(fn, "__name__", "background"), daemon=True)
        self.fn, self.args, self.value, self.error = fn, args, None, None
        self.start()

    def run(self):
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:  # raised by result()
            self.error = exc

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


def _plan(stored: pd.DataFrame, manifest: list[Entry], result: ExtractResult) -> list[Entry]:
    """Entries not yet stored: real images by content, synthetic ones by content within their
    set; reports files whose id is stored with other content."""
    have = set(zip(stored["set"], stored["sha256"]))  # real images: set ""
    ids = dict(zip(stored["image"], stored["sha256"]))
    todo = []
    for e in manifest:
        if (e.set, e.sha256) in have:
            result.already_stored += 1
        elif e.image in ids:
            result.notes.append(f"{e.image} changed since it was stored; the stored features are kept "
                                "(extract into a new store to replace them)")
        else:
            todo.append(e)
    return todo


def extract(real, synthetic, store, pairs=None, model: str = DEFAULT_MODEL, weights: str = "auto",
            layers: Sequence[str] | None = None, batch_size: int = 8, device: str = "cpu",
            scheduler: str | None = None, storage_options: dict | None = None,
            progress: bool = True, report: Callable[[str], None] | None = None,
            set_name: str | None = None, input_size: int | tuple[int, int] | None = None) -> ExtractResult:
    """Extract the feature maps of every image under ``real`` and ``synthetic`` into ``store``.

    Resumable and idempotent: images already stored are skipped (real images by content,
    synthetic ones by content within their set), new ones appended. Corrupt images are reported
    and skipped. ``set_name`` names the synthetic set (default: the stored set that holds this
    folder's images, else the folder's name; :mod:`fakesegment_nb.sets` has the rules). Raises
    :class:`~fakesegment_nb.errors.FakesegmentError` for bad folders, pairs, weights, set names,
    or a store made by another network.

    ``input_size``: ``(height, width)`` every whole image is resized to (EfficientNet-Lites and
    ``timm:`` models; default the model's), recorded as the store's ``input_size`` ``[height, width]``.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if batch_size < 1:
        raise ParameterError("batch_size", "must be at least 1")
    if set_name is not None:
        check_set_name(set_name)
    report = report or (lambda msg: tqdm.write(msg, file=sys.stderr))
    image_files(real, "real"), image_files(synthetic, "synthetic")  # a bad folder is said at once
    # the files are hashed while the network loads
    manifest_job = _Background(build_manifest, real, synthetic, pairs)
    backbone, info = load_backbone(model, weights, layers, device, input_size=input_size)
    manifest, notes = manifest_job.result()
    result = ExtractResult(store=str(store), notes=list(notes))
    for n in notes:
        report(n)
    result.weights = info.label
    attrs = store_attrs(backbone, info)
    writer = StoreWriter(store, storage_options)
    with writer.locked():
        if writer.exists():
            writer.check_identity(attrs)
            writer.repair()
            stored = writer.stored()
        else:
            stored = pd.DataFrame(columns=["image", "domain", "sha256", "pair", "path", "set"], dtype=object)
        result.set, prefix, set_notes = choose_set(stored, [e for e in manifest if e.domain == "synthetic"],
                                                   synthetic, set_name)
        manifest = place_set(manifest, stored, result.set, prefix)
        result.notes += set_notes
        todo = _plan(stored, manifest, result)
        for n in result.notes[len(notes):]:
            report(n)
        if scheduler:
            from .distributed import extract_distributed

            extract_distributed(scheduler, writer, attrs, todo, backbone, weights, info, batch_size,
                                device, result, report, progress)
        elif todo:
            _extract_local(writer, attrs, todo, backbone, batch_size, result, report, progress)
        if not writer.exists():  # a new store, and not one of its images could be decoded
            raise FakesegmentError(f"none of the {len(result.failed)} images could be decoded (each is named "
                                   "above): nothing was stored")
        _update_pairs(writer, manifest)
        for name in writer.drop_stale_maps():
            result.notes.append(f"{name} removed: it covered fewer images; run `fakesegment maps` again")
            report(result.notes[-1])
    result.timings["total_s"] = time.perf_counter() - t0
    return result


def _update_pairs(writer: StoreWriter, manifest: list[Entry]) -> None:
    """A later run may add partners: this run's synthetic images get their pairs, and every real
    image the pair :func:`~fakesegment_nb.sets.real_pairs` gives it."""
    if not writer.exists():
        return
    table = writer.stored()
    syn = {e.image: e.pair for e in manifest if e.domain == "synthetic"}
    table["pair"] = [syn.get(i, p) for i, p in zip(table["image"], table["pair"])]
    writer.set_pairs({**dict(zip(table["image"], table["pair"])), **real_pairs(table)})


def _extract_local(writer, attrs, todo, backbone, batch_size, result, report, progress):
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="img", desc="extract", disable=not progress, file=sys.stderr)
    w = _Writer(writer, attrs, bar, len(todo))
    w.start()
    fwd = 0.0
    checked = False
    try:
        # each image is decoded and preprocessed in a decoding thread; the network runs here
        for entries, sizes, inputs in _decoded_batches(todo, batch_size, report, result.failed,
                                                       prepare=lambda a: backbone.preprocess([a])):
            t = time.perf_counter()
            if checked:
                feats = _run_prepared(backbone, inputs)
            else:  # the first image tells whether float16 can hold these activations
                feats, full = _run_prepared(backbone, inputs, keep_float32=True)
                for msg in float16_problems({k: v[:1] for k, v in feats.items()}, full):
                    report(f"warning: {msg}")
                checked, full = True, None
            fwd += time.perf_counter() - t
            w.put((entries, sizes, feats))
            result.added += len(entries)
    finally:
        w.q.put(None)
        w.join()
        bar.close()
    if w.error is not None:
        raise w.error
    result.timings.update(forward_s=fwd, write_s=w.busy_s)
