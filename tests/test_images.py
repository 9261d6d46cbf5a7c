import numpy as np
import pytest
from PIL import Image

from fakesegment_nb.errors import ImageError
from fakesegment_nb.images import load_rgb


def _save(tmp_path, name, im):
    p = tmp_path / name
    im.save(p)
    return p


def test_rgb_roundtrip(tmp_path):
    a = (np.arange(12 * 10 * 3) % 256).astype(np.uint8).reshape(12, 10, 3)
    out = load_rgb(_save(tmp_path, "a.png", Image.fromarray(a)))
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)
    np.testing.assert_array_equal(out, a)
    assert out.flags.writeable


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "1", "CMYK"])
def test_modes_become_rgb(tmp_path, mode):
    rgb = Image.fromarray((np.random.default_rng(0).random((9, 7, 3)) * 255).astype(np.uint8))
    im = rgb.convert(mode)
    ext = "jpg" if mode == "CMYK" else "png"
    out = load_rgb(_save(tmp_path, f"x.{ext}", im))
    assert out.shape == (9, 7, 3) and out.dtype == np.uint8
    if mode == "L":
        assert (out[:, :, 0] == out[:, :, 1]).all()
        np.testing.assert_array_equal(out[:, :, 0], np.asarray(im))


def test_rgba_drops_alpha(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 200
    a[..., 3] = 0
    out = load_rgb(_save(tmp_path, "a.png", Image.fromarray(a, "RGBA")))
    assert (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()


def test_16bit_png_is_scaled(tmp_path):
    a = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    out = load_rgb(p)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 255], [128, 1]])


@pytest.mark.parametrize("fmt", ["jpg", "tif", "bmp", "webp"])
def test_other_formats(tmp_path, fmt):
    a = np.full((8, 8, 3), 100, np.uint8)
    out = load_rgb(_save(tmp_path, f"a.{fmt}", Image.fromarray(a)))
    assert out.shape == (8, 8, 3)
    assert abs(int(out.mean()) - 100) <= 3


def test_truncated_and_garbage_are_reported_by_name(tmp_path):
    good = _save(tmp_path, "good.png", Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7))
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:60])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg")
    for p in (trunc, junk, tmp_path / "missing.png"):
        with pytest.raises(ImageError, match=p.name):
            load_rgb(p)
