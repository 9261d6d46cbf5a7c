"""Extraction sharded over a dask.distributed cluster.

The driver checks the images, reserves rows for a wave of batches, each worker (which loads the
model once) decodes, runs and writes its own rows, and the driver commits the wave's image
table. Layers whose chunks hold several images would have two workers rewriting one chunk at
once: workers hand those back, and the driver writes them. Batches are the same as a
single-process run's, so the store is the same.
"""

from __future__ import annotations

import sys

import numpy as np

from .errors import ImageError
from .images import load_rgb
from .schema import image_rows
from .writer import StoreWriter

__all__ = ["extract_distributed", "worker_weights"]

_BACKBONES: dict = {}


def _worker_backbone(model, weights, layers, device, input_size=None):
    from .weights import load_backbone

    key = (model, weights, tuple(layers), device, input_size)
    if key not in _BACKBONES:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _BACKBONES[key] = load_backbone(model, weights, layers, device, input_size=input_size)
    return _BACKBONES[key]


def _image_size(path: str):
    try:
        return load_rgb(path).shape[:2]
    except ImageError as exc:
        return str(exc)


def _extract_batch(url, storage_options, model, weights, layers, device, start, paths, shared=(), input_size=None):
    """Write rows ``start:start+len(paths)`` of every layer but ``shared``; return the weights'
    label and the ``shared`` layers' features (for the driver to write)."""
    backbone, info = _worker_backbone(model, weights, layers, device, input_size)
    feats = backbone.run([load_rgb(p) for p in paths])
    StoreWriter(url, storage_options).write_features(start, {k: v for k, v in feats.items() if k not in shared})
    return info.label, {k: feats[k] for k in shared}


def worker_weights(spec: str, label: str) -> str:
    """The weights argument that makes a worker load exactly what the driver resolved."""
    if label.startswith("random:"):
        return label
    if label.startswith("file:"):
        return spec
    return label.split(":", 1)[0]  # "coco" or "imagenet": the model's pretrained weights


def extract_distributed(scheduler, writer: StoreWriter, attrs, todo, backbone, weights_spec, info,
                        batch_size, device, result, report, progress, wave_batches: int = 2):
    """Shard ``todo`` over the cluster at ``scheduler`` (an address or a ``Client``)."""
    from distributed import Client
    from tqdm.auto import tqdm

    from .backbones import input_size_applies

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        sizes = client.gather(client.map(_image_size, [e.path for e in todo], pure=False))
        good, good_sizes = [], []
        for e, s in zip(todo, sizes):
            if isinstance(s, str):
                report(f"skipped unreadable image {s}")
                result.failed.append(e.image)
            else:
                good.append(e)
                good_sizes.append(tuple(s))
        if not good:
            return
        if not writer.exists():
            probe = backbone.run([np.zeros((*backbone.input_size, 3), np.uint8)])
            writer.create(attrs, {k: v.shape[1:] for k, v in probe.items()})
        wspec = worker_weights(weights_spec, info.label)
        # the driver's input size, for the models that take one (the others size themselves)
        sized = tuple(backbone.input_size) if input_size_applies(backbone.name) else None
        shared = writer.layers_sharing_chunks()
        batches = [list(range(i, min(i + batch_size, len(good)))) for i in range(0, len(good), batch_size)]
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        per_wave = max(1, n_workers * wave_batches)
        bar = tqdm(total=len(good), unit="img", desc="extract", disable=not progress, file=sys.stderr)
        try:
            for w in range(0, len(batches), per_wave):
                wave = batches[w:w + per_wave]
                idx = [i for b in wave for i in b]
                start = writer.reserve(len(idx))
                futs, offset = [], start
                for b in wave:
                    futs.append(client.submit(_extract_batch, writer.url, writer.storage_options, attrs["model"],
                                              wspec, attrs["layers"], device, offset,
                                              [good[i].path for i in b], shared, sized, pure=False))
                    offset += len(b)
                done = client.gather(futs)
                labels = {lab for lab, _ in done}
                if labels != {info.label}:
                    raise RuntimeError(f"a worker loaded weights {labels}, the driver {info.label}")
                if shared:  # the wave's rows are contiguous, in batch order
                    writer.write_features(start, {k: np.concatenate([f[k] for _, f in done]) for k in shared})
                writer.commit(image_rows([good[i] for i in idx], [good_sizes[i] for i in idx]))
                result.added += len(idx)
                bar.update(len(idx))
        finally:
            bar.close()
    finally:
        if client is not scheduler:
            client.close()
