"""Decoding image files to RGB, whatever their mode."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an integer or float array of any range to uint8."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind in "ui":
        top = 65535 if arr.max(initial=0) > 255 else 255
        return (arr.astype(np.float64) * (255.0 / top) + 0.5).clip(0, 255).astype(np.uint8)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    arr = np.nan_to_num(arr.astype(np.float64))
    top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
    return (arr * (255.0 / top) + 0.5).clip(0, 255).astype(np.uint8)


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB ``uint8`` array of shape ``(H, W, 3)``.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted.

    Raises
    ------
    ImageError
        The file is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                if im.mode in ("RGB",):
                    arr = np.asarray(im)
                elif im.mode in ("L", "P", "PA", "LA", "RGBA", "RGBX", "CMYK", "YCbCr", "1", "LAB", "HSV"):
                    arr = np.asarray(im.convert("RGBA" if im.mode in ("P", "PA") else "RGB").convert("RGB"))
                else:  # I;16, I, F and other wide modes: scale to 8 bits ourselves
                    arr = _to_uint8(np.asarray(im))
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.ndim == 3 and arr.shape[2] == 2:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{path}: unsupported image layout {arr.shape}")
    arr = _to_uint8(arr)
    if not (arr.flags.writeable and arr.flags.c_contiguous):
        arr = np.array(arr, order="C")
    return arr
