"""Batched SSIM of feature maps in torch, equal to scikit-image's (DESIGN.md section 5).

``skimage.metrics.structural_similarity(a, b, data_range=R, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`` filters with an 11-tap Gaussian (``truncate=3.5``) in scipy's
``reflect`` (half-sample symmetric) border mode and averages the SSIM map over its interior,
``pad = 5`` pixels in from every border. Here the separable filter, border mode included, is a
small ``(n, n)`` matrix per axis, so a whole stack of maps is filtered by two batched matrix
products. Everything is differentiable (the feature-space loss uses it).

Arrays in, arrays out: numpy inputs give float64 numpy results; torch tensors give tensors of
their floating dtype (float16/bfloat16 are computed in float32).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

SIGMA = 1.5
TRUNCATE = 3.5
K1, K2 = 0.01, 0.03
WIN_SIZE = 2 * int(TRUNCATE * SIGMA + 0.5) + 1  # 11, as skimage derives it
PAD = (WIN_SIZE - 1) // 2


def _to_tensor(x):
    """(tensor, was_numpy) with a floating dtype torch can matmul on the CPU."""
    if isinstance(x, torch.Tensor):
        t, was_np = x, False
    else:
        t, was_np = torch.from_numpy(np.asarray(x, dtype=np.float64)), True
    if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    return t, was_np


def _out(t: torch.Tensor, was_np: bool):
    return t.detach().cpu().numpy() if was_np else t


def _pair(a, b):
    ta, na = _to_tensor(a)
    tb, nb = _to_tensor(b)
    if ta.shape != tb.shape:
        raise ValueError(f"SSIM needs maps of the same shape, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    if ta.ndim < 2:
        raise ValueError("SSIM needs maps with at least two dimensions (..., y, x)")
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    return ta.to(dtype), tb.to(dtype), na and nb


@lru_cache(maxsize=64)
def _filter_matrix_np(n: int, sigma: float, truncate: float) -> np.ndarray:
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 / sigma**2 * x**2)
    k /= k.sum()
    m = np.zeros((n, n))
    rows = np.arange(n)
    for off, w in zip(x, k):
        j = (rows + off) % (2 * n)          # scipy "reflect": ... b a | a b c d | d c ...
        j = np.where(j >= n, 2 * n - 1 - j, j)
        np.add.at(m, (rows, j), w)
    return m


def gaussian_filter_matrix(n: int, sigma: float = SIGMA, truncate: float = TRUNCATE,
                           dtype=torch.float64, device=None) -> torch.Tensor:
    """The ``(n, n)`` matrix ``M`` with ``M @ x == scipy.ndimage.gaussian_filter1d(x, sigma,
    mode="reflect", truncate=truncate)`` along the first axis of ``x``."""
    return torch.as_tensor(_filter_matrix_np(int(n), float(sigma), float(truncate)), dtype=dtype, device=device)


def data_range(a, b):
    """Per-map joint range ``max(a, b) - min(a, b)`` over the last two axes, shape ``(...)``."""
    ta, tb, was_np = _pair(a, b)
    hi = torch.maximum(ta.amax(dim=(-2, -1)), tb.amax(dim=(-2, -1)))
    lo = torch.minimum(ta.amin(dim=(-2, -1)), tb.amin(dim=(-2, -1)))
    return _out(hi - lo, was_np)


CHUNK_ELEMENTS = 2**17  # map pixels per block: five float64 quantities stay within the CPU caches


def _ssim_block(a, b, rng, my, mx):
    """SSIM maps of a stack ``(n, h, w)`` with per-map ranges ``(n,)``; ``my`` ``(h', h)`` and
    ``mx`` ``(w, w')`` filter (and crop) the two axes.

    Each pair of maps is first centred on its joint mean ``c``: filtering commutes with a
    constant shift (every filter row sums to 1), so the means are ``u + c`` while the
    variances come from centred values, without the cancellation of ``E[x^2] - E[x]^2`` that
    float32 would suffer on maps far from 0. SSIM needs ``vx + vy`` and ``vxy``, never ``vx``
    or ``vy`` alone: four filtered quantities (``a, b, a^2 + b^2, ab``) instead of skimage's five.
    """
    c = ((a + b).mean(dim=(-2, -1)) / 2)[:, None, None]
    c1 = ((K1 * rng) ** 2)[:, None, None]
    c2 = ((K2 * rng) ** 2)[:, None, None]
    grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or rng.requires_grad)
    if grad:
        a, b = a - c, b - c
        stack = torch.stack([a, b, a * a + b * b, a * b])
    else:  # written straight into one buffer: no intermediate copies
        stack = torch.empty((4, *a.shape), dtype=a.dtype, device=a.device)
        a, b = torch.sub(a, c, out=stack[0]), torch.sub(b, c, out=stack[1])
        torch.mul(a, a, out=stack[2]).addcmul_(b, b)
        torch.mul(a, b, out=stack[3])
    # both passes as one large GEMM each, (rows, w) @ (w, w'): the y pass works on the
    # transposed stack; the result stays transposed (SSIM is pointwise), a view turns it back
    ux, uy, uss, uxy = torch.matmul(torch.matmul(stack, mx).transpose(-1, -2), my.T).transpose(-1, -2).unbind(0)
    if grad:
        mu_x, mu_y = ux + c, uy + c
        return (((2 * mu_x * mu_y + c1) * (2 * (uxy - ux * uy) + c2))
                / ((mu_x * mu_x + mu_y * mu_y + c1) * (uss - ux * ux - uy * uy + c2)))
    # the same arithmetic in place (no autograd): far fewer passes over memory
    uxy.sub_(ux * uy).mul_(2).add_(c2)         # 2 vxy + C2
    uss.sub_(ux * ux).sub_(uy * uy).add_(c2)   # vx + vy + C2
    ux.add_(c)                                 # mu_x
    uy.add_(c)                                 # mu_y
    lum = ux * uy
    lum.mul_(2).add_(c1)                       # 2 mu_x mu_y + C1
    ux.square_().add_(uy.square_()).add_(c1)   # mu_x^2 + mu_y^2 + C1
    return lum.mul_(uxy).div_(ux.mul_(uss))


def _ssim_map(a: torch.Tensor, b: torch.Tensor, rng: torch.Tensor, sigma: float, crop: int = 0) -> torch.Tensor:
    """SSIM maps ``(..., h - 2 crop, w - 2 crop)``: the full maps without ``crop`` pixels at
    each border, computed for those locations only."""
    h, w = a.shape[-2:]
    lead = a.shape[:-2]
    my = gaussian_filter_matrix(h, sigma, dtype=a.dtype, device=a.device)[crop:h - crop]
    mx = gaussian_filter_matrix(w, sigma, dtype=a.dtype, device=a.device).T[:, crop:w - crop]
    a, b = a.reshape(-1, h, w), b.reshape(-1, h, w)
    rng = rng.to(a.dtype).expand(lead).reshape(-1)
    n = a.shape[0]
    k = n if a.device.type != "cpu" else max(1, CHUNK_ELEMENTS // (h * w))
    if n <= k:
        out = _ssim_block(a, b, rng, my, mx)
    else:
        out = torch.cat([_ssim_block(a[i:i + k], b[i:i + k], rng[i:i + k], my, mx) for i in range(0, n, k)])
    return out.reshape(*lead, *out.shape[-2:])


def _range_tensor(a: torch.Tensor, b: torch.Tensor, rng) -> torch.Tensor:
    if rng is None:
        with torch.no_grad():  # a constant of the metric, as in skimage
            return data_range(a, b)
    return torch.as_tensor(rng, dtype=a.dtype, device=a.device).expand(a.shape[:-2])


def ssim_map(a, b, data_range=None, *, sigma: float = SIGMA):
    """Per-location SSIM of each ``(y, x)`` map: skimage's ``full=True`` image ``S``.

    Parameters
    ----------
    a, b : arrays ``(..., y, x)`` of the same shape (numpy or torch).
    data_range : ``None`` (default) for each map pair's joint ``max - min`` (DESIGN.md), or a
        scalar / array broadcastable to ``(...)``.
    sigma : Gaussian window width (11 taps at the default 1.5).

    Returns
    -------
    SSIM maps of the input shape, defined at every location for any map size (borders see
    the reflected map, as in skimage). Maps whose data range is 0 are NaN.
    """
    ta, tb, was_np = _pair(a, b)
    return _out(_ssim_map(ta, tb, _range_tensor(ta, tb, data_range), sigma), was_np)


def _interior_mean(a: torch.Tensor, b: torch.Tensor, rng: torch.Tensor) -> torch.Tensor:
    """skimage's mean SSIM: the map averaged over its interior, ``PAD`` pixels in from each
    border (only those locations are computed); NaN for maps smaller than the window."""
    h, w = a.shape[-2:]
    if h < WIN_SIZE or w < WIN_SIZE:
        return torch.full(a.shape[:-2], math.nan, dtype=a.dtype, device=a.device)
    return _ssim_map(a, b, rng, SIGMA, crop=PAD).mean(dim=(-2, -1))


def mean_ssim(a, b, data_range=None):
    """skimage's mean SSIM of each map pair, shape ``(...)``.

    The SSIM map averaged over its interior (``pad = 5`` pixels from each border cropped).
    NaN for maps smaller than 11x11 (skimage refuses them) and for a data range of 0.
    """
    ta, tb, was_np = _pair(a, b)
    rng = _range_tensor(ta, tb, data_range)
    return _out(_interior_mean(ta, tb, rng), was_np)


def _valid_channel_mean(x: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over ``dim`` of the entries where ``valid``; NaN where none is."""
    x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
    n = valid.sum(dim=dim).to(x.dtype)
    return x.sum(dim=dim) / n  # 0/0 -> NaN where no channel counts


def feature_ssim(a, b):
    """The ``ssim`` of ``pairs.csv``: SSIM of two feature maps ``(..., channel, y, x)``.

    Per channel, skimage's mean SSIM with ``data_range`` the channel pair's joint max - min;
    channels with a range of 0 are skipped; the mean over the remaining channels. Returns
    shape ``(...)``: NaN for maps smaller than 11x11, when no channel has a range, or when a
    map holds NaN or inf.
    """
    ta, tb, was_np = _pair(a, b)
    if ta.ndim < 3:
        raise ValueError("feature_ssim needs maps (..., channel, y, x)")
    rng = _range_tensor(ta, tb, None)
    valid = rng != 0
    safe = torch.where(valid, rng, torch.ones_like(rng))  # skipped channels stay finite (gradients)
    per_channel = _interior_mean(ta, tb, safe)
    out = _valid_channel_mean(per_channel, valid, dim=-1)
    bad = ~torch.isfinite(rng).all(dim=-1)
    out = torch.where(bad, torch.full_like(out, math.nan), out)
    return _out(out, was_np)


def local_ssim(a, b, data_range=None, *, sigma: float = SIGMA):
    """Per-location SSIM averaged over channels: ``(..., channel, y, x)`` -> ``(..., y, x)``.

    What a map of "where do these two feature maps disagree" wants (``1 - local_ssim``).
    Channels whose data range is 0 (or not finite) are left out of the mean; locations where
    no channel counts are NaN. ``data_range`` as in :func:`ssim_map`, broadcastable to
    ``(..., channel)`` -- pass e.g. a real reference's per-channel spread to normalise by it.
    """
    ta, tb, was_np = _pair(a, b)
    if ta.ndim < 3:
        raise ValueError("local_ssim needs maps (..., channel, y, x)")
    rng = _range_tensor(ta, tb, data_range)
    ok = (rng != 0) & torch.isfinite(rng)
    s = _ssim_map(ta, tb, torch.where(ok, rng, torch.ones_like(rng)), sigma)
    valid = ok[..., None, None].expand_as(s)
    return _out(_valid_channel_mean(s, valid, dim=-3), was_np)
