"""Feature extraction: images -> backbone -> float16 rows in the store.

Decoding (a thread pool) and writing (a writer thread) overlap the forward pass. Written batches
are committed together every COMMIT_EVERY_S seconds and at the end, so an interrupted run loses
at most that much work plus the batch in flight, and a rerun skips every image already stored
(same domain and sha256).
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
from .errors import ImageError, ParameterError
from .images import load_rgb
from .manifest import Entry, build_manifest
from .store import image_rows
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
                     failed: list[str], workers: int = 2) -> Iterator[tuple[list[Entry], list[np.ndarray]]]:
    """Decode ahead in threads (a bounded window), yield batches of ``batch_size`` good images."""

    def load(e: Entry):
        try:
            return e, load_rgb(e.path)
        except ImageError as exc:
            return e, exc

    window = max(2 * batch_size, 4)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        it = iter(entries)
        batch_e, batch_a = [], []
        while True:
            while len(pending) < window:
                nxt = next(it, None)
                if nxt is None:
                    break
                pending.append(pool.submit(load, nxt))
            if not pending:
                break
            e, res = pending.popleft().result()
            if isinstance(res, ImageError):
                report(f"skipped unreadable image {res}")
                failed.append(e.image)
                continue
            batch_e.append(e)
            batch_a.append(res)
            if len(batch_e) == batch_size:
                yield batch_e, batch_a
                batch_e, batch_a = [], []
        if batch_e:
            yield batch_e, batch_a


class _Writer(threading.Thread):
    """Consumes (entries, sizes, features), writes them in order and commits every ``commit_every_s``.

    Rows for all ``total`` images are reserved once; what failed to decode is trimmed at the end.
    """

    def __init__(self, writer: StoreWriter, attrs: dict, progress, total: int,
                 commit_every_s: float = COMMIT_EVERY_S):
        super().__init__(name="store-writer", daemon=True)
        self.writer, self.attrs, self.progress, self.total = writer, attrs, progress, total
        self.commit_every_s = commit_every_s
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


def _plan(writer: StoreWriter, manifest: list[Entry], result: ExtractResult) -> list[Entry]:
    """Entries not yet stored; reports files whose id is stored with other content."""
    if not writer.exists():
        return manifest
    stored = writer.stored()
    have = set(zip(stored["domain"], stored["sha256"]))
    ids = dict(zip(stored["image"], stored["sha256"]))
    todo = []
    for e in manifest:
        if (e.domain, e.sha256) in have:
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
            input_size: int | tuple[int, int] | None = None) -> ExtractResult:
    """Extract the feature maps of every image under ``real`` and ``synthetic`` into ``store``.

    ``input_size``: ``(height, width)`` every whole image is resized to (EfficientNet-Lites and
    ``timm:`` models; default the model's), recorded as the store's ``input_size`` ``[height, width]``.

    Resumable and idempotent: images already stored (same domain and content) are skipped, new
    ones appended. Corrupt images are reported and skipped. Raises
    :class:`~fakesegment_nb.errors.FakesegmentError` for bad folders, pairs, weights, or a store
    made by another network.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if batch_size < 1:
        raise ParameterError("batch_size", "must be at least 1")
    report = report or (lambda msg: tqdm.write(msg, file=sys.stderr))
    manifest, notes = build_manifest(real, synthetic, pairs)
    result = ExtractResult(store=str(store), notes=list(notes))
    for n in notes:
        report(n)
    backbone, info = load_backbone(model, weights, layers, device, input_size=input_size)
    result.weights = info.label
    attrs = store_attrs(backbone, info)
    writer = StoreWriter(store, storage_options)
    with writer.locked():
        if writer.exists():
            writer.check_identity(attrs)
            writer.repair()
        todo = _plan(writer, manifest, result)
        for n in result.notes[len(notes):]:
            report(n)
        if scheduler:
            from .distributed import extract_distributed

            extract_distributed(scheduler, writer, attrs, todo, backbone, weights, info, batch_size,
                                device, result, report, progress)
        elif todo:
            _extract_local(writer, attrs, todo, backbone, batch_size, result, report, progress)
        writer.set_pairs({e.image: e.pair for e in manifest})
        for name in writer.drop_stale_maps():
            result.notes.append(f"{name} removed: it covered fewer images; run `fakesegment maps` again")
            report(result.notes[-1])
    result.timings["total_s"] = time.perf_counter() - t0
    return result


def _extract_local(writer, attrs, todo, backbone, batch_size, result, report, progress):
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="img", desc="extract", disable=not progress, file=sys.stderr)
    w = _Writer(writer, attrs, bar, len(todo))
    w.start()
    fwd = 0.0
    checked = False
    try:
        for entries, arrays in _decoded_batches(todo, batch_size, report, result.failed):
            t = time.perf_counter()
            if checked:
                feats = backbone.run(arrays)
            else:  # the first image tells whether float16 can hold these activations
                feats, full = backbone.run(arrays, keep_float32=True)
                for msg in float16_problems({k: v[:1] for k, v in feats.items()}, full):
                    report(f"warning: {msg}")
                checked, full = True, None
            fwd += time.perf_counter() - t
            w.put((entries, [a.shape[:2] for a in arrays], feats))
            result.added += len(entries)
    finally:
        w.q.put(None)
        w.join()
        bar.close()
    if w.error is not None:
        raise w.error
    if result.failed:
        writer.repair()  # the rows reserved for images that did not decode
    result.timings.update(forward_s=fwd, write_s=w.busy_s)
