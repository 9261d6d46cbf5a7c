"""The enhancer network and its file format.

:class:`Enhancer` is a small image-to-image network that post-processes renders:

1. a global tone curve per colour channel (monotone, piecewise linear over ``knots`` segments,
   fixed at 0 and 1) followed by a 3x3 colour matrix and offset: exposure, gamma and white
   balance. With ``exposure``, each image is first brought to one exposure (its log-average
   luminance, the "key" of Reinhard et al.'s photographic tone reproduction, 2002, set to the
   training renders' by :func:`~fakesegment_nb.enhance.train.train_enhancer`) by a power
   ``x ** g``, so renders lit darker or brighter than the training ones reach the curve where it
   was learned;
2. a shallow residual stack of 3x3 convolutions at full resolution: local sharpening and
   detail. Its last convolution starts at zero;
3. grain, as a camera adds it (Carlson et al., "Modeling camera effects to improve visual
   learning from synthetic data", 2018): Gaussian noise filtered by a learned 3x3 kernel per
   channel, with a signal-dependent standard deviation ``sqrt(read^2 + shot * y)`` per channel
   (read and shot noise), both learned in log space from near zero.

Steps 2 and 3 are local: their effect depends on the pixel scale they run at. An enhancer trained
on whole images resized to the network's input learned them at that scale, so
:meth:`Enhancer.at_scale` applies them there and adds their upsampled result to the image toned
at its own resolution (:func:`working_size` says which scale a saved enhancer was trained at).

A fresh enhancer is the identity up to grain of 0.001 (a quarter of an 8-bit level). The noise
is drawn from a generator seeded by the enhancer's seed and the image's pixels, so the same
enhancer writes the same output for the same image, on every run.

A saved enhancer (:func:`save_enhancer`) is a ``torch.save`` dict of tensors and plain values
(readable with ``weights_only=True``): ``format``, the network's ``config`` and ``state_dict``,
and ``meta``: the backbone model, weights label, layers and loss settings it was trained with.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FakesegmentError

__all__ = ["Enhancer", "FORMAT", "exposure_key", "save_enhancer", "load_enhancer", "noise_generator", "working_size", "working_resize"]

FORMAT = "fakesegment_nb.enhancer/1"


def exposure_key(x: torch.Tensor) -> torch.Tensor:
    """Each image's key: ``exp(mean(log(lum + 0.01)))`` of ``(B, 3, H, W)`` images in [0, 1],
    ``lum`` the Rec. 709 luminance of the (gamma-encoded) values; ``(B,)``, within [0.02, 0.98]."""
    lum = (x.clamp(0, 1) * x.new_tensor([0.2126, 0.7152, 0.0722])[None, :, None, None]).sum(1)
    return (lum + 0.01).log().mean((1, 2)).exp().clamp(0.02, 0.98)


class Enhancer(nn.Module):
    """Render in, enhanced render out: float ``(B, 3, H, W)`` in [0, 1], any size.

    Parameters
    ----------
    width : channels of the hidden convolutions.
    depth : number of 3x3 convolutions in the residual stack (at least 2).
    knots : segments of each channel's tone curve.
    noise : add learned grain.
    exposure : bring each image to the key ``exposure_key`` (a buffer) before the tone curve.
    """

    def __init__(self, width: int = 8, depth: int = 3, knots: int = 16, noise: bool = True, exposure: bool = False):
        super().__init__()
        if width < 1 or depth < 2 or knots < 1:
            raise FakesegmentError("Enhancer needs width >= 1, depth >= 2 and knots >= 1")
        self.config = {"width": int(width), "depth": int(depth), "knots": int(knots), "noise": bool(noise)}
        if exposure:
            self.config["exposure"] = True
            # the key every image is brought to before the tone curve (training sets the renders')
            self.register_buffer("exposure_key", torch.tensor(0.18))
        # softmax of the logits = the curve's increments; equal logits = the identity curve
        self.curve = nn.Parameter(torch.zeros(3, knots))
        self.mix = nn.Parameter(torch.eye(3))
        self.offset = nn.Parameter(torch.zeros(3))
        layers: list[nn.Module] = []
        for i in range(depth - 1):
            layers += [nn.Conv2d(3 if i == 0 else width, width, 3, padding=1, padding_mode="reflect"),
                       nn.ReLU()]
        last = nn.Conv2d(width, 3, 3, padding=1, padding_mode="reflect")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.residual = nn.Sequential(*layers, last)
        if noise:
            kernel = torch.zeros(3, 1, 3, 3)
            kernel[:, 0, 1, 1] = 1.0
            self.grain_kernel = nn.Parameter(kernel)       # spatial correlation of the grain (unit norm)
            self.log_read = nn.Parameter(torch.full((3,), math.log(1e-3)))   # read noise sigma
            self.log_shot = nn.Parameter(torch.full((3,), math.log(1e-6)))   # shot noise variance / signal

    def tone_parameters(self) -> list[nn.Parameter]:
        """The image-wide tone curve, colour matrix and offset."""
        return [self.curve, self.mix, self.offset]

    def grain_parameters(self) -> list[nn.Parameter]:
        """The grain's kernel and levels (none without grain)."""
        return [self.grain_kernel, self.log_read, self.log_shot] if self.config["noise"] else []

    def exposed(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with each image's key (:func:`exposure_key`) brought to the enhancer's by a power
        ``x ** g`` per image, ``g`` within [1/3, 3] (monotone, nothing clipped; the key of the result
        is close to the target, not equal: the power acts on each channel, not on the luminance);
        ``x`` itself without ``exposure``."""
        if not self.config.get("exposure"):
            return x
        g = (self.exposure_key.log() / exposure_key(x).log()).clamp(1 / 3, 3)
        return x.clamp(0, 1).clamp_min(1e-6) ** g[:, None, None, None]

    def tone(self, x: torch.Tensor) -> torch.Tensor:
        """The global part: per-channel tone curve, then the colour matrix and offset."""
        x = self.exposed(x)
        k = self.curve.shape[1]
        inc = torch.softmax(self.curve, dim=1)                                  # (3, K), sums to 1
        knots = torch.cat([torch.zeros_like(inc[:, :1]), inc.cumsum(1)], 1)     # (3, K+1), 0 .. 1
        b, c, h, w = x.shape
        t = x.clamp(0, 1).reshape(b, c, h * w) * k
        idx = t.detach().floor().clamp(0, k - 1).long()
        base = torch.gather(knots[None].expand(b, -1, -1), 2, idx)
        slope = torch.gather(inc[None].expand(b, -1, -1), 2, idx)
        y = (base + (t - idx) * slope).reshape(b, c, h, w)
        return torch.einsum("ij,bjhw->bihw", self.mix, y) + self.offset[None, :, None, None]

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Enhance ``x``; ``noise`` (same shape) or ``generator`` makes the grain reproducible."""
        if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] == 3 and x.is_floating_point()):
            raise FakesegmentError("images must be a float tensor (batch, 3, height, width) in [0, 1]")
        toned = self.tone(x)
        y = toned + self.residual(toned)
        if self.config["noise"]:
            if noise is None:
                noise = torch.randn(x.shape, generator=generator, device=x.device if generator is None
                                    else generator.device, dtype=x.dtype).to(x.device)
            k = self.grain_kernel / self.grain_kernel.flatten(1).norm(dim=1)[:, None, None, None]  # unit gain
            n = F.conv2d(F.pad(noise, (1, 1, 1, 1), mode="reflect"), k, groups=3)
            var = (2 * self.log_read).exp()[None, :, None, None] \
                + self.log_shot.exp()[None, :, None, None] * y.detach().clamp(0, 1)
            y = y + n * var.sqrt()
        return y.clamp(0, 1)

    def at_scale(self, x: torch.Tensor, size: tuple[int, int] | None, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, resize: str = "bilinear") -> torch.Tensor:
        """Enhance ``x`` with the local steps (residual, grain) run at ``size`` (height, width):
        ``tone(x) + up(enhanced(down(x)) - tone(down(x)))``, down antialiased with ``resize``
        (``"bilinear"`` or ``"bicubic"``: as training resized, :func:`working_resize`), up bilinear,
        so the image keeps its own resolution and the local steps act at the pixel scale they were
        trained at. ``size`` None or ``x``'s own size: :meth:`forward`. ``noise``, if given, has the
        shape of ``x`` resized to ``size``."""
        if size is None or tuple(size) == tuple(x.shape[-2:]):
            return self(x, noise=noise, generator=generator)
        small = F.interpolate(x, size=tuple(size), mode=resize, antialias=True, align_corners=False).clamp(0, 1)
        local = self(small, noise=noise, generator=generator) - self.tone(small)
        up = F.interpolate(local, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        return (self.tone(x) + up).clamp(0, 1)


def working_size(meta: dict) -> tuple[int, int] | None:
    """The scale an enhancer's local steps were trained at, from its file's ``meta``: the network's
    input size for whole images resized to it (the default), None (the image's own resolution) for
    crops at the images' own resolution or ``native`` training, or a file that does not say."""
    size = meta.get("input_size")  # one side: training resizes whole images to size x size
    if not size or meta.get("crop") or meta.get("native"):
        return None
    return (int(size), int(size))


def working_resize(meta: dict) -> str:
    """The interpolation an enhancer's training resized whole images with, from its file's ``meta``
    (the network's preprocessing's; files written before it was recorded: ``"bilinear"``)."""
    return str(meta.get("resize", "bilinear"))


def noise_generator(seed: int, image: np.ndarray) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and the decoded pixels of ``image``."""
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int.from_bytes(digest[:7], "little")) % (2 ** 63))
    return g


def save_enhancer(enhancer: Enhancer, path: str | Path, meta: dict) -> Path:
    """Write ``enhancer`` and what it was trained with (``meta``, plain values) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in enhancer.state_dict().items()}
    torch.save({"format": FORMAT, "config": dict(enhancer.config), "state_dict": state, "meta": dict(meta)}, path)
    return path


def load_enhancer(path: str | Path) -> tuple[Enhancer, dict]:
    """Read an enhancer file: ``(Enhancer in eval mode, meta)``.

    Raises
    ------
    FakesegmentError
        The file is missing, not readable by ``torch.load(weights_only=True)``, not an enhancer
        file, of another format version, or its tensors do not fit the network it describes.
    """
    path = Path(path)
    if path.is_dir():
        raise FakesegmentError(f"{path} is a folder, not an enhancer file (make one with `fakesegment enhance train`)")
    if not path.is_file():
        raise FakesegmentError(f"enhancer file {path} does not exist")
    from ..weights import read_torch_file

    obj = read_torch_file(path, f"enhancer file {path} is not readable")
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt is None or not str(fmt).startswith("fakesegment_nb.enhancer/"):
        raise FakesegmentError(f"{path} is not a fakesegment enhancer file (make one with `fakesegment enhance train`)")
    if fmt != FORMAT:
        raise FakesegmentError(f"{path} is an enhancer file of format {fmt}; this fakesegment_nb reads {FORMAT}")
    try:
        net = Enhancer(**obj["config"])
        missing, unexpected = net.load_state_dict(obj["state_dict"], strict=False)
        if missing or unexpected:
            raise FakesegmentError(f"enhancer file {path} does not fit its network: missing "
                                   f"{sorted(missing) or 'none'}, unexpected {sorted(unexpected) or 'none'}")
    except FakesegmentError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise FakesegmentError(f"enhancer file {path} is damaged ({type(exc).__name__}: {first[:200]})") from None
    return net.eval(), dict(obj.get("meta", {}))
