"""The bundled probe set: real photos and synthetic twins with known unrealistic regions.

Real photos that ship inside installed packages (scikit-image's ``data`` module and matplotlib's
sample data; no network) are cropped and resized to ``size`` x ``size``. Each crop gives

* ``real/scene_NNN.png``: the crop with mild camera sensor noise (signal-dependent shot noise
  plus read noise, slightly correlated as after demosaicing);
* ``synthetic/scene_NNN.png``: a *render* of the same scene. Globally it has the renderer look
  that a detector should not care about -- no sensor grain and slightly too clean (a light blur),
  a small exposure / white-balance drift, a sub-pixel misregistration -- and locally one to three
  unrealistic details inside known regions (see :data:`KINDS`);
* ``masks/scene_NNN.png``: 255 inside the unrealistic regions, 0 elsewhere (same size and stem
  as the synthetic image);
* ``probe.json``: the seed, the kinds used, and per image its source photo, crop, global
  nuisance parameters and regions (kind, box ``[y0, x0, y1, x1]``, area).

Everything is a function of ``seed``: the same call writes byte-identical files.

Artifact kinds (:data:`KINDS`); the first five (:data:`TUNING_KINDS`) are the ones the maps were
tuned on, the last three (:data:`HELDOUT_KINDS`) were held out of tuning and are used to check
that the maps generalise:

``missing_texture``  the region's fine texture is not rendered (low-pass content only);
``aliasing``         point-sampled without a prefilter: jaggies / staircase edges, blocky detail;
``banding``          colour quantised to a few levels over smooth content (contour bands);
``repeated_tiles``   one small texture tile repeated over the region;
``cg_highlight``     a hard-edged, clipped specular highlight;
``flat_shading``     low-poly look: the region broken into flat-coloured facets;
``texture_stretch``  UV stretching: a thin strip of texture smeared across the region;
``hard_shadow``      a shadow-map shadow: uniform darkening with a razor-sharp edge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from .errors import FakesegmentError

TUNING_KINDS = ("missing_texture", "aliasing", "banding", "repeated_tiles", "cg_highlight")
HELDOUT_KINDS = ("flat_shading", "texture_stretch", "hard_shadow")
KINDS = TUNING_KINDS + HELDOUT_KINDS

# (name, loader) of photographs bundled with installed packages; grayscale ones become RGB.
_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                   "immunohistochemistry", "retina", "coins", "camera", "brick", "grass", "gravel",
                   "moon", "clock")


def _load_skimage(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def _load_motorcycle() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


def _load_grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def photo_sources() -> dict[str, Callable[[], np.ndarray]]:
    """Bundled photographs by name (loaders; nothing is read until called)."""
    src: dict[str, Callable[[], np.ndarray]] = {n: (lambda n=n: _load_skimage(n)) for n in _SKIMAGE_PHOTOS}
    src["motorcycle"] = _load_motorcycle
    src["grace_hopper"] = _load_grace_hopper
    return src


def _as_rgb_float(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    a = a[:, :, :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    return (a - a.min()) / max(float(a.max() - a.min()), 1e-6)


@dataclass
class ProbeResult:
    """What :func:`make_probe` wrote."""

    out: Path
    n: int
    seed: int
    kinds: tuple[str, ...]
    regions: int


# --------------------------------------------------------------------------------------------
# global looks


def _sensor_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera grain: shot noise (variance ~ signal) + read noise, slightly correlated."""
    shot = rng.uniform(1.5e-4, 3.5e-4)
    read = rng.uniform(0.004, 0.008)
    noise = rng.standard_normal(img.shape).astype(np.float32)
    noise = ndi.gaussian_filter(noise, sigma=(0.5, 0.5, 0))
    noise /= noise.std() + 1e-8
    sigma = np.sqrt(shot * np.clip(img, 0, 1) + read ** 2)
    return img + noise * sigma


def _render_look(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Too clean, exposure / white-balance drift, sub-pixel misregistration."""
    blur = float(rng.uniform(0.5, 0.9))
    gain = float(rng.uniform(0.93, 1.07))
    gamma = float(rng.uniform(0.92, 1.08))
    wb = rng.uniform(0.97, 1.03, size=3).astype(np.float32)
    dy, dx = (float(v) for v in rng.uniform(-0.8, 0.8, size=2))
    out = ndi.gaussian_filter(img, sigma=(blur, blur, 0))
    out = np.clip(out * gain * wb, 0, 1) ** gamma
    out = ndi.shift(out, (dy, dx, 0), order=3, mode="nearest")
    params = {"blur_sigma": round(blur, 4), "gain": round(gain, 4), "gamma": round(gamma, 4),
              "white_balance": [round(float(v), 4) for v in wb], "shift_yx": [round(dy, 4), round(dx, 4)]}
    return out, params


# --------------------------------------------------------------------------------------------
# region shapes


def _shape_mask(h: int, w: int, cy: float, cx: float, ry: float, rx: float, shape: str,
                rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if shape == "ellipse":
        t = rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
        v = -(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)
        return (u / ry) ** 2 + (v / rx) ** 2 <= 1
    if shape == "rect":
        return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    # star-shaped polygon with 5-8 vertices
    from skimage.draw import polygon

    k = int(rng.integers(5, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(0.6, 1.0, k)
    py = cy + ry * rad * np.sin(ang)
    px = cx + rx * rad * np.cos(ang)
    m = np.zeros((h, w), bool)
    rr, cc = polygon(py, px, (h, w))
    m[rr, cc] = True
    return m


def _local_std(gray: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    mu = ndi.gaussian_filter(gray, sigma)
    return np.sqrt(np.clip(ndi.gaussian_filter(gray * gray, sigma) - mu * mu, 0, None))


# --------------------------------------------------------------------------------------------
# local artifacts: each takes (image, region mask, rng) and returns (image, mask of the artifact)


def _feather(m: np.ndarray, sigma: float = 0.7) -> np.ndarray:
    return np.clip(ndi.gaussian_filter(m.astype(np.float32), sigma), 0, 1)[:, :, None]


def _missing_texture(img, m, rng):
    smooth = ndi.gaussian_filter(img, sigma=(rng.uniform(5, 9),) * 2 + (0,))
    a = _feather(m, 1.0)
    return img * (1 - a) + smooth * a, m


def _aliasing(img, m, rng):
    f = int(rng.integers(3, 6))
    h, w = m.shape
    oy, ox = (int(v) for v in rng.integers(0, f, 2))
    # point sampling on a coarse grid without a prefilter, shown with nearest-neighbour magnification
    ys = np.clip((np.arange(h) - oy) // f * f + oy, 0, h - 1)
    xs = np.clip((np.arange(w) - ox) // f * f + ox, 0, w - 1)
    # a hard-thresholded contrast boost turns soft edges into binary stair steps
    sampled = img[ys][:, xs]
    mean = ndi.uniform_filter(sampled, size=(3 * f, 3 * f, 1))
    hard = np.where(sampled > mean, np.maximum(sampled, mean + 0.08), np.minimum(sampled, mean - 0.08))
    out = np.clip(0.5 * sampled + 0.5 * hard, 0, 1)
    return np.where(m[:, :, None], out, img), m


def _banding(img, m, rng):
    levels = int(rng.integers(4, 8))
    smooth = ndi.gaussian_filter(img, sigma=(3, 3, 0))
    q = np.round(smooth * levels) / levels
    return np.where(m[:, :, None], q, img), m


def _repeated_tiles(img, m, rng):
    t = int(rng.integers(14, 26))
    ys, xs = np.nonzero(m)
    y0, x0 = ys.min(), xs.min()
    tile = img[y0:y0 + t, x0:x0 + t]
    if tile.shape[0] < t or tile.shape[1] < t:
        return img, np.zeros_like(m)
    h, w = m.shape
    reps = (h // t + 2, w // t + 2, 1)
    tiled = np.tile(tile, reps)
    oy, ox = (t - y0 % t) % t, (t - x0 % t) % t
    tiled = tiled[oy:oy + h, ox:ox + w]
    a = _feather(m, 0.7)
    return img * (1 - a) + tiled * a, m


def _cg_highlight(img, m, rng):
    ys, xs = np.nonzero(m)
    cy, cx = ys.mean(), xs.mean()
    ry = max(4.0, (ys.max() - ys.min()) * rng.uniform(0.25, 0.45))
    rx = max(4.0, (xs.max() - xs.min()) * rng.uniform(0.25, 0.45))
    h, w = m.shape
    hl = _shape_mask(h, w, cy, cx, ry, rx, "ellipse", rng) & m
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    core = np.clip(1.15 - 0.25 * r, 0, 1)[:, :, None]          # clipped, nearly flat white core
    tint = rng.uniform(0.92, 1.0, 3).astype(np.float32)
    out = np.where(hl[:, :, None], np.clip(np.maximum(img, core * tint), 0, 1), img)
    return out, hl


def _flat_shading(img, m, rng):
    ys, xs = np.nonzero(m)
    k = int(rng.integers(6, 14))
    seeds = np.stack([rng.uniform(ys.min(), ys.max() + 1, k), rng.uniform(xs.min(), xs.max() + 1, k)], 1)
    d = (ys[:, None] - seeds[None, :, 0]) ** 2 + (xs[:, None] - seeds[None, :, 1]) ** 2
    lab = d.argmin(1)
    out = img.copy()
    for j in range(k):
        sel = lab == j
        if sel.any():
            col = img[ys[sel], xs[sel]].mean(0) * rng.uniform(0.93, 1.07)
            out[ys[sel], xs[sel]] = np.clip(col, 0, 1)
    return out, m


def _texture_stretch(img, m, rng):
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    out = img.copy()
    if rng.random() < 0.5:  # a thin column smeared horizontally
        strip = img[y0:y1, x0 + (x1 - x0) // 2: x0 + (x1 - x0) // 2 + 2].mean(1, keepdims=True)
        patch = np.repeat(strip, x1 - x0, axis=1)
    else:
        strip = img[y0 + (y1 - y0) // 2: y0 + (y1 - y0) // 2 + 2, x0:x1].mean(0, keepdims=True)
        patch = np.repeat(strip, y1 - y0, axis=0)
    region = out[y0:y1, x0:x1]
    mm = m[y0:y1, x0:x1, None]
    out[y0:y1, x0:x1] = np.where(mm, patch, region)
    return out, m


def _hard_shadow(img, m, rng):
    f = rng.uniform(0.45, 0.65)
    tint = np.array([1.0, 1.0, rng.uniform(1.0, 1.12)], np.float32)
    return np.where(m[:, :, None], np.clip(img * f * tint, 0, 1), img), m


_ARTIFACTS = {"missing_texture": _missing_texture, "aliasing": _aliasing, "banding": _banding,
              "repeated_tiles": _repeated_tiles, "cg_highlight": _cg_highlight,
              "flat_shading": _flat_shading, "texture_stretch": _texture_stretch,
              "hard_shadow": _hard_shadow}

# where each kind is placed: "texture" (busy areas, where a missing or fake texture shows),
# "smooth" (gradients, where banding shows) or "any"
_PLACEMENT = {"missing_texture": "texture", "aliasing": "texture", "banding": "smooth",
              "repeated_tiles": "texture", "cg_highlight": "any", "flat_shading": "texture",
              "texture_stretch": "texture", "hard_shadow": "any"}


def _place(gray: np.ndarray, taken: np.ndarray, kind: str, rng: np.random.Generator, size: int):
    h, w = gray.shape
    std = _local_std(gray, 6.0)
    if _PLACEMENT[kind] == "texture":
        weight = std ** 2 + 1e-4
    elif _PLACEMENT[kind] == "smooth":
        weight = 1.0 / (std + 0.01) * (ndi.gaussian_filter(gray, 6) > 0.08)
    else:
        weight = np.ones_like(gray)
    margin = size // 8
    weight = weight.copy()
    weight[:margin] = weight[-margin:] = 0
    weight[:, :margin] = weight[:, -margin:] = 0
    weight[ndi.binary_dilation(taken, iterations=size // 16)] = 0
    if weight.sum() <= 0:
        return None
    p = (weight / weight.sum()).ravel()
    idx = int(rng.choice(p.size, p=p))
    cy, cx = divmod(idx, w)
    ry = rng.uniform(0.07, 0.16) * size
    rx = rng.uniform(0.07, 0.16) * size
    shape = str(rng.choice(["ellipse", "rect", "polygon"]))
    m = _shape_mask(h, w, cy, cx, ry, rx, shape, rng)
    m &= ~ndi.binary_dilation(taken, iterations=2)
    return m if m.sum() > 0.25 * np.pi * ry * rx else None


# --------------------------------------------------------------------------------------------


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.55, 1.0))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = photo[y0:y0 + side, x0:x0 + side]
    im = Image.fromarray((np.clip(crop, 0, 1) * 255 + 0.5).astype(np.uint8)).resize((size, size), Image.LANCZOS)
    return np.asarray(im).astype(np.float32) / 255.0, [y0, x0, side]


def _to_png(arr: np.ndarray, path: Path) -> None:
    a = arr if arr.dtype == np.uint8 else (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(a).save(path, format="PNG", optimize=False)


def check_kinds(kinds: Sequence[str] | str | None) -> tuple[str, ...]:
    """Normalise a kinds argument: None/"all" -> every kind; "tuning"/"heldout"; names or a
    comma-separated string of names."""
    if kinds is None or kinds == "all":
        return KINDS
    if kinds == "tuning":
        return TUNING_KINDS
    if kinds == "heldout":
        return HELDOUT_KINDS
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise FakesegmentError(f"unknown artifact kind {', '.join(bad) or '(none given)'}; "
                               f"choose from {', '.join(KINDS)} (or all, tuning, heldout)")
    return tuple(dict.fromkeys(kinds))


def make_probe(out: str | Path, n: int = 24, seed: int = 0, kinds: Sequence[str] | str | None = None,
               size: int = 320, regions: tuple[int, int] = (1, 3), severity: float = 1.0) -> ProbeResult:
    """Write a probe set of ``n`` real / synthetic pairs with ground-truth masks.

    Parameters
    ----------
    out : folder; ``real/``, ``synthetic/``, ``masks/`` and ``probe.json`` are written into it
        (existing files of the same names are overwritten).
    n : number of pairs (scenes). Crops cycle over the bundled photographs.
    seed : everything is a deterministic function of it.
    kinds : artifact kinds to use (names, a comma-separated string, "all", "tuning" or
        "heldout"); see :data:`KINDS`.
    size : side of the square images in pixels.
    regions : (min, max) number of unrealistic regions per synthetic image.
    severity : how far each synthetic image departs from its real twin, in [0, 1]: it is written
        as ``real + severity * (render - real)``, so 0 writes the real image and 1 (default) the
        render. (Beyond 1 the extrapolation would put the real image's grain back, inverted.)
        The scenes, regions and masks do not depend on it: probes that differ only in
        ``severity`` form a severity ladder.

    Returns
    -------
    ProbeResult
    """
    kinds = check_kinds(kinds)
    if n < 1:
        raise FakesegmentError("--n must be at least 1")
    if size < 64:
        raise FakesegmentError("probe images must be at least 64 pixels wide")
    if not 0 <= severity <= 1:
        raise FakesegmentError(f"severity must be in [0, 1], got {severity}")
    out = Path(out)
    for sub in ("real", "synthetic", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    sources = photo_sources()
    names = list(sources)
    order = np.random.default_rng([seed, 7]).permutation(len(names))
    cache: dict[str, np.ndarray] = {}
    meta = {"seed": seed, "n": n, "size": size, "kinds": list(kinds), "severity": float(severity), "images": []}
    total = 0
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        name = names[order[i % len(names)]]
        if name not in cache:
            cache[name] = _as_rgb_float(sources[name]())
        base, crop = _crop(cache[name], size, rng)
        real = _sensor_noise(base, rng)
        syn, look = _render_look(base, rng)
        gray = syn.mean(2)
        taken = np.zeros(gray.shape, bool)
        regs = []
        want = int(rng.integers(regions[0], regions[1] + 1))
        tries = 0
        while len(regs) < want and tries < 12 * want:
            tries += 1
            kind = str(kinds[int(rng.integers(len(kinds)))])
            m = _place(gray, taken, kind, rng, size)
            if m is None:
                continue
            new, am = _ARTIFACTS[kind](syn, m, rng)
            # keep only artifacts a person could see: a clear mean change inside their mask
            if am.sum() < 64 or np.abs(new - syn)[am].mean() < 0.03:
                continue
            syn = new.astype(np.float32)
            taken |= am
            ys, xs = np.nonzero(am)
            regs.append({"kind": kind, "box": [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1],
                         "area": int(am.sum())})
        stem = f"scene_{i:03d}"
        _to_png(real, out / "real" / f"{stem}.png")
        if severity != 1.0:
            syn = np.clip(real + np.float32(severity) * (syn - real), 0, 1)
        _to_png(syn, out / "synthetic" / f"{stem}.png")
        _to_png(taken.astype(np.uint8) * 255, out / "masks" / f"{stem}.png")
        meta["images"].append({"stem": stem, "source": name, "crop_yx_side": crop, "render": look,
                               "regions": regs})
        total += len(regs)
    (out / "probe.json").write_text(json.dumps(meta, indent=1))
    return ProbeResult(out=out, n=n, seed=seed, kinds=kinds, regions=total)


def probe_regions(out: str | Path) -> dict[str, list[dict]]:
    """``{stem: [region, ...]}`` from a probe folder's ``probe.json`` ({} if there is none)."""
    p = Path(out) / "probe.json"
    if not p.is_file():
        return {}
    return {im["stem"]: im["regions"] for im in json.loads(p.read_text())["images"]}
