"""Training data for the enhancer: image folders as torch Datasets, and held-out splits.

Images are decoded as extraction decodes them (:func:`~fakesegment_nb.images.load_rgb`:
grayscale, palette, RGBA and 16-bit files become 8-bit RGB) and either

* resized whole to the backbone's input size (``crop=None``, the default for training: the scale
  at which the network sees them in a store, where the gap is measured), or
* cut into random ``crop x crop`` crops at the image's own resolution (the enhancer works at full
  resolution when applied, so crops train where grain, sharpness and detail have their real
  scale; an image whose shorter side is under ``crop`` is first enlarged to it; measured worse at
  p2 on the warehouse tuning split, docs/loss.md),

and augmented with torchvision's ``transforms.v2`` (a horizontal flip and, for whole images, a
small reflected translation; no rescaling beyond that, which would change the scale of grain and
detail that the loss compares).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import FakesegmentError, ImageError, ParameterError
from ..images import load_rgb
from ..manifest import Entry, scan_folder

__all__ = ["ImageFiles", "training_transform", "infinite_loader", "paired_keys", "HoldoutSplit",
           "holdout_split", "collate_sizes"]


class _AtLeast(v2.Transform):
    """Enlarge an image whose shorter side is under ``size`` so that it is ``size`` (others pass as
    they are): a crop of ``size`` then always fits."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def transform(self, inpt, params):  # torchvision >= 0.21 name
        if min(v2.functional.get_size(inpt)) >= self.size:
            return inpt
        return v2.functional.resize(inpt, self.size, antialias=True)

    _transform = transform  # torchvision < 0.21 name


class _Shift(v2.Transform):
    """A random reflected translation by up to ``fraction`` of each side, at the image's own size
    (what ``RandomCrop(size, padding, padding_mode="reflect")`` does for a fixed size). Draws from
    torch's global generator, as the v2 transforms do."""

    def __init__(self, fraction: float = 1 / 16):
        super().__init__()
        self.fraction = float(fraction)

    def make_params(self, flat_inputs):  # torchvision >= 0.21 name; one draw for all inputs of a call
        h, w = v2.functional.get_size(flat_inputs[0])
        py, px = max(int(h * self.fraction), 1), max(int(w * self.fraction), 1)
        dy, dx = int(torch.randint(0, 2 * py + 1, (1,))), int(torch.randint(0, 2 * px + 1, (1,)))
        return {"pad": [px, py, px, py], "dy": dy, "dx": dx}

    def transform(self, inpt, params):  # torchvision >= 0.21 name
        h, w = v2.functional.get_size(inpt)
        padded = v2.functional.pad(inpt, params["pad"], padding_mode="reflect")
        return v2.functional.crop(padded, params["dy"], params["dx"], h, w)

    _get_params = make_params  # torchvision < 0.21 names
    _transform = transform


def training_transform(size: int, augment: bool = True, crop: int | None = None,
                       native: bool = False, resize: str = "bilinear") -> v2.Transform:
    """uint8 ``(H, W, 3)`` arrays -> float ``(3, size, size)`` in [0, 1], augmented; with ``crop``,
    a random ``(3, crop, crop)`` crop at the image's own resolution instead (``size`` unused); with
    ``native``, the whole image at its own resolution (flipped and shifted by up to 1/16 of each
    side), to be enhanced there and resized to the network's input by its own preprocessing: the
    path ``enhance apply`` and extraction take.

    Called with several images at once, it applies the same random flip, shift and crop to each
    (how a synthetic image and its real twin stay aligned). Whole images are resized with
    ``resize`` (``"bilinear"`` or ``"bicubic"``, antialiased): the network's own preprocessing's
    interpolation (:attr:`~fakesegment_nb.backbones.Backbone.resize`), so that the loss sees the
    pixel-scale detail that extraction will.
    """
    if crop is not None:
        if int(crop) != crop or crop < 32:
            raise ParameterError("crop", f"must be a whole number of at least 32 pixels, got {crop}")
        steps = [v2.ToImage(), _AtLeast(int(crop)), v2.RandomCrop(int(crop))]
        if augment:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.ToDtype(torch.float32, scale=True))
        return v2.Compose(steps)
    if native:
        steps = [v2.ToImage()]
        if augment:
            steps += [v2.RandomHorizontalFlip(), _Shift(1 / 16)]
        steps.append(v2.ToDtype(torch.float32, scale=True))
        return v2.Compose(steps)
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize((size, size), interpolation=v2.InterpolationMode(resize),
                                                         antialias=True)]
    if augment:
        steps += [v2.RandomHorizontalFlip(),
                  v2.RandomCrop(size, padding=max(size // 16, 1), padding_mode="reflect")]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


# Decoded images kept in memory per dataset, up to this many bytes (8-bit RGB): training draws each
# image many times, and decoding a PNG of 1 MP took 30 ms (2 MP: 84 ms), a fifth to nearly half of a
# training step on the warehouse renders. Beyond the budget, images are decoded when drawn.
DECODE_CACHE_BYTES = 2 << 30


class ImageFiles(Dataset):
    """The images of ``entries`` (from :func:`~fakesegment_nb.manifest.scan_folder`), decoded
    and transformed; with ``twins`` (one path or None per entry) an item is ``(image, twin)``.
    Decoded images are kept (up to ``cache_bytes``) and transformed afresh at each draw."""

    def __init__(self, entries: Sequence[Entry], transform: v2.Transform,
                 twins: Sequence[str | None] | None = None, cache_bytes: int = DECODE_CACHE_BYTES):
        self.entries = list(entries)
        self.transform = transform
        self.twins = list(twins) if twins is not None else None
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[str, torch.Tensor] = {}
        self._cached = 0

    def __len__(self) -> int:
        return len(self.entries)

    def _decode(self, path: str) -> tv_tensors.Image:
        img = self._cache.get(path)
        if img is None:
            try:
                img = torch.from_numpy(load_rgb(path)).permute(2, 0, 1)
            except ImageError as exc:
                raise FakesegmentError(f"cannot train on {path}: {exc}") from None
            if self._cached + img.numel() <= self.cache_bytes:
                self._cache[path] = img
                self._cached += img.numel()
        return tv_tensors.Image(img)

    def __getitem__(self, i: int):
        img = self._decode(self.entries[i].path)
        if self.twins is None:
            return self.transform(img)
        twin = self._decode(self.twins[i])
        return self.transform(img, twin)


def collate_sizes(items):
    """Collate images that may differ in size: one stacked tensor when they all share a shape, else
    a list of ``(3, H, W)`` tensors (whole images at their own resolution); items that are tuples
    (image, twin) collate field by field."""
    if isinstance(items[0], (tuple, list)):
        return tuple(collate_sizes(list(f)) for f in zip(*items))
    if all(t.shape == items[0].shape for t in items):
        return torch.stack([torch.as_tensor(t).as_subclass(torch.Tensor) for t in items])
    return [torch.as_tensor(t).as_subclass(torch.Tensor) for t in items]


def infinite_loader(dataset: Dataset, batch_size: int, batches: int, seed: int) -> DataLoader:
    """``batches`` batches of ``batch_size`` items drawn with replacement, in an order fixed by
    ``seed`` (in-process loading: the augmentations draw from torch's seeded global generator).
    Images of different sizes come as a list (:func:`collate_sizes`)."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size * batches, generator=g)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0, drop_last=True,
                      collate_fn=collate_sizes)


def paired_keys(real: Sequence[Entry], synthetic: Sequence[Entry]) -> dict[str, str]:
    """``{synthetic path: real path}`` for images with the same relative path without suffix."""
    by_key = {e.key: e.path for e in real}
    return {e.path: by_key[e.key] for e in synthetic if e.key in by_key}


@dataclass
class HoldoutSplit:
    """Folders ``train/{real,synthetic}`` and ``heldout/{real,synthetic}`` and their sizes."""

    root: Path
    train_real: Path
    train_synthetic: Path
    heldout_real: Path
    heldout_synthetic: Path
    counts: dict


def _place(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def holdout_split(real, synthetic, out, fraction: float = 0.5, seed: int = 0) -> HoldoutSplit:
    """Split two folders into a training part and a held-out part, by scene.

    A scene is a relative path without suffix: a synthetic image and its real twin (same
    stem) always land on the same side, so a held-out measurement never sees an image of a
    scene the enhancer trained on, real or synthetic. Scenes are shuffled by ``seed``; the
    first ``fraction`` of them (at least one, and at least one left over) is for training.
    Files are hard-linked (copied where links are not possible) under ``out``.
    """
    if not 0 < fraction < 1:
        raise ParameterError("fraction", f"must lie strictly between 0 and 1, got {fraction}")
    r, s = scan_folder(real, "real"), scan_folder(synthetic, "synthetic")
    keys = sorted({e.key for e in r} | {e.key for e in s})
    if len(keys) < 2:
        raise FakesegmentError("holdout_split needs at least two scenes (images with different names)")
    order = np.random.default_rng(seed).permutation(len(keys))
    n_train = min(max(int(round(fraction * len(keys))), 1), len(keys) - 1)
    train = {keys[i] for i in order[:n_train]}
    out = Path(out)
    for part in ("train", "heldout"):
        for dom in ("real", "synthetic"):
            d = out / part / dom
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
    counts = {}
    for dom, entries in (("real", r), ("synthetic", s)):
        for e in entries:
            part = "train" if e.key in train else "heldout"
            _place(e.path, out / part / dom / e.image.split("/", 1)[1])
            counts[f"{part}_{dom}"] = counts.get(f"{part}_{dom}", 0) + 1
    for part in ("train", "heldout"):
        for dom in ("real", "synthetic"):
            if not counts.get(f"{part}_{dom}"):
                raise FakesegmentError(f"the {part} half has no {dom} image; give more images or another seed")
    return HoldoutSplit(out, out / "train" / "real", out / "train" / "synthetic", out / "heldout" / "real",
                        out / "heldout" / "synthetic", counts)
