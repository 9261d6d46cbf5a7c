"""Batched SSIM against skimage.metrics.structural_similarity as DESIGN.md section 5 defines it."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from fakesegment_nb.ssim import data_range, feature_ssim, local_ssim, mean_ssim, ssim_map

from support import severity_store


def sk(a, b, full=False):
    r = max(a.max(), b.max()) - min(a.min(), b.min())
    return structural_similarity(a, b, data_range=r, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, full=full)


def sk_feature_ssim(a, b):
    """The DESIGN.md definition, literally: per channel, skip range 0, mean."""
    vals = [sk(x, y) for x, y in zip(a, b) if max(x.max(), y.max()) - min(x.min(), y.min()) != 0]
    return np.mean(vals) if vals else np.nan


@pytest.mark.parametrize("shape", [(11, 11), (12, 17), (38, 38), (23, 11), (50, 64)])
def test_random_maps_match_skimage(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.normal(size=(6, *shape)) * rng.uniform(0.1, 10, size=(6, 1, 1))
    b = a + rng.normal(size=a.shape) * rng.uniform(0.01, 3, size=(6, 1, 1))
    b[2] = np.maximum(b[2], 0)  # ReLU-like: many zeros
    want = np.array([sk(x, y) for x, y in zip(a, b)])
    np.testing.assert_allclose(mean_ssim(a, b), want, atol=1e-9)
    for i in (0, 2):
        _, full = sk(a[i], b[i], full=True)
        np.testing.assert_allclose(ssim_map(a, b)[i], full, atol=1e-9)
    # torch float32 in: float32 out, still within the 1e-3 of the contract
    got32 = mean_ssim(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), want, atol=1e-3)


def test_real_feature_maps_match_skimage():
    import xarray as xr

    tree = xr.open_datatree(severity_store(2), engine="zarr", consolidated=False)
    for layer in ("layer1", "layer3"):  # 56x56 and 14x14 maps of resnet18 on photos
        f = tree[f"layers/{layer}/features"].values.astype(np.float64)
        a, b = f[6 + 1], f[1]  # synthetic coffee vs real coffee, (C, h, w)
        want = sk_feature_ssim(a, b)
        got = feature_ssim(a, b)
        assert abs(got - want) < 1e-3
        assert 0.2 < got < 0.99
        per_channel = [sk(x, y) for x, y in zip(a[:20], b[:20])]
        np.testing.assert_allclose(mean_ssim(a[:20], b[:20]), per_channel, atol=1e-3)


def test_batched_leading_dims_and_float16():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 4, 16, 16)).astype(np.float16)
    b = (a + rng.random(a.shape) * 0.3).astype(np.float16)
    got = feature_ssim(torch.from_numpy(a), torch.from_numpy(b))
    assert got.shape == (2, 3) and got.dtype == torch.float32
    want = sk_feature_ssim(a[1, 2].astype(np.float64), b[1, 2].astype(np.float64))
    assert abs(float(got[1, 2]) - want) < 1e-3


def test_small_maps_constant_channels_and_nonfinite():
    rng = np.random.default_rng(1)
    a = rng.random((3, 10, 10))
    assert np.isnan(mean_ssim(a, a + 0.1)).all()          # smaller than 11x11: NaN
    assert np.isnan(feature_ssim(a, a + 0.1))
    assert ssim_map(a, a + 0.1).shape == a.shape           # but local maps exist
    a = rng.random((3, 12, 12))
    b = a + rng.random(a.shape) * 0.2
    a[1] = b[1] = 4.0                                      # range 0: skipped, not a NaN mean
    assert data_range(a, b)[1] == 0
    assert feature_ssim(a, b) == pytest.approx(np.mean([sk(a[0], b[0]), sk(a[2], b[2])]), abs=1e-12)
    assert np.isnan(feature_ssim(np.zeros((2, 12, 12)), np.zeros((2, 12, 12))))  # no channel counts
    a[2, 3, 3] = np.inf
    assert np.isnan(feature_ssim(a, b))
    assert feature_ssim(a[:1], a[:1]) == pytest.approx(1.0, abs=1e-12)  # identical maps


def test_local_ssim_averages_channel_maps():
    rng = np.random.default_rng(2)
    a = rng.random((2, 4, 15, 13))
    b = a + rng.random(a.shape) * 0.5
    b[:, 3] = a[:, 3] = 1.0  # skipped channel
    loc = local_ssim(a, b)
    assert loc.shape == (2, 15, 13)
    np.testing.assert_allclose(loc, ssim_map(a[:, :3], b[:, :3]).mean(axis=1), atol=1e-12)
    # a given data range (e.g. a real reference's spread) is used as is
    np.testing.assert_allclose(local_ssim(a[:, :3], b[:, :3], data_range=np.ones(3)),
                               ssim_map(a[:, :3], b[:, :3], data_range=1.0).mean(axis=1), atol=1e-12)


def test_differentiable():
    rng = np.random.default_rng(3)
    a = torch.tensor(rng.random((2, 12, 12)), requires_grad=True)
    b = torch.tensor(rng.random((2, 12, 12)))
    assert torch.autograd.gradcheck(lambda x: ssim_map(x, b, data_range=1.0).sum(), (a,))
    c = torch.tensor(rng.random((3, 14, 14)), requires_grad=True)
    d = c.detach().clone()
    d[1] = 0.5
    c.data[1] = 0.5  # a skipped channel must not poison the gradient with NaN
    loss = 1 - feature_ssim(c, d + torch.tensor(rng.random((3, 14, 14))) * 0.1)
    loss.backward()
    assert torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0
