"""Applying a trained enhancer to a folder of images.

The enhancer is only the small network: applying it needs no backbone. Every image is decoded
as extraction decodes it (8-bit RGB), enhanced at its own resolution -- its local steps at the scale
they were trained at (:func:`~.network.working_size`, :meth:`~.network.Enhancer.at_scale`) -- and written under ``out``
with the same relative path and format (JPEG at quality 95; PNG at zlib level 1: lossless all
the same, and at 1 MP several times faster to write than the default level 6). Unreadable files are reported by
name and skipped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import FakesegmentError, ImageError, ParameterError
from ..images import load_rgb
from ..manifest import scan_folder
from .network import Enhancer, load_enhancer, noise_generator, working_resize, working_size

__all__ = ["apply_enhancer", "enhance_array", "ApplyResult"]


@dataclass
class ApplyResult:
    out: Path
    written: int = 0
    failed: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    scale: tuple[int, int] | None = None  # where the local steps ran (None: each image's own resolution)
    resize: str = "bilinear"  # how images were resized to ``scale``, as training resized them


def enhance_array(enhancer: Enhancer, image: np.ndarray, seed: int = 0,
                  scale: tuple[int, int] | None = None, resize: str = "bilinear") -> np.ndarray:
    """One uint8 RGB image ``(H, W, 3)`` -> its enhanced uint8 copy, the local steps run at ``scale``
    (height, width; None: the image's own), the image resized there with ``resize``
    (:meth:`~.network.Enhancer.at_scale`); the grain is seeded by ``seed`` and the image's pixels,
    so the result is reproducible."""
    x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float().div(255)  # a writable copy
    with torch.no_grad():
        y = enhancer.at_scale(x, scale, generator=noise_generator(seed, image), resize=resize)
    return (y[0].permute(1, 2, 0).mul(255).round().clamp(0, 255)).to(torch.uint8).numpy()


class _Decoded(Dataset):
    def __init__(self, entries):
        self.entries = entries

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i):
        try:
            return i, load_rgb(self.entries[i].path), None
        except ImageError as exc:
            return i, None, str(exc)


def _as_is(item):
    return item  # keep the decoded numpy array (the default would turn it into a tensor)


def _write(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=95)
    elif path.suffix.lower() == ".png":
        im.save(path, compress_level=1)
    else:
        im.save(path)


def apply_enhancer(enhancer, images, out, progress: bool = True) -> ApplyResult:
    """Enhance every image under ``images`` into ``out`` (same relative paths).

    Parameters
    ----------
    enhancer : an enhancer file's path, or ``(Enhancer, meta)`` as
        :func:`~fakesegment_nb.enhance.network.load_enhancer` returns.
    images : folder of images (recursive).
    out : output folder; must not be ``images`` or inside it.
    """
    from tqdm.auto import tqdm

    net, meta = load_enhancer(enhancer) if isinstance(enhancer, (str, Path)) else enhancer
    if not isinstance(net, Enhancer):
        raise FakesegmentError("enhancer must be an enhancer file or (Enhancer, meta)")
    entries = scan_folder(images, "synthetic")
    src, dst = Path(images).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents:
        raise ParameterError("out", f"{out} must not be the images folder or inside it")
    seed = int(meta.get("seed", 0))
    res = ApplyResult(Path(out), meta=meta, scale=working_size(meta), resize=working_resize(meta))
    loader = DataLoader(_Decoded(entries), batch_size=None, num_workers=0, collate_fn=_as_is)
    net.eval()
    for i, arr, err in tqdm(loader, total=len(entries), desc="enhance apply", unit="img", disable=not progress,
                            file=sys.stderr):
        if err is not None:
            res.failed.append(err)
            continue
        rel = entries[i].image.split("/", 1)[1]
        _write(enhance_array(net, arr, seed, res.scale, res.resize), Path(out) / rel)
        res.written += 1
    return res
