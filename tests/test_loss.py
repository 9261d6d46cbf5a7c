"""FeatureRealismLoss: zero on identical images, equal to the tabled mse/ssim, and it trains."""

import numpy as np
import pytest
import torch

import fakesegment_nb as fs
from fakesegment_nb.errors import FakesegmentError
from fakesegment_nb.images import load_rgb
from fakesegment_nb.loss import FeatureRealismLoss

from support import STATS_LAYERS as LAYERS, backbone, degrade, extracted_store, photo


def as_batch(arrays) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 255 for a in arrays])


@pytest.fixture(scope="module")
def loss():
    return FeatureRealismLoss(backbone(), layers=LAYERS, alpha=0.5)


def test_zero_for_identical_inputs(loss):
    x = as_batch([photo("astronaut"), photo("coffee")])
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    unpaired = FeatureRealismLoss(backbone(), layers=LAYERS, mode="unpaired")
    assert float(unpaired(x, x)) == pytest.approx(0.0, abs=1e-9)
    y = as_batch([degrade(photo("astronaut"), 2), degrade(photo("coffee"), 2)])
    assert float(loss(y, x)) > 0.05 and float(unpaired(y, x)) > 0


def test_equals_the_tabled_mse_and_ssim_of_the_same_pair(loss):
    store, real_dir, syn_dir = extracted_store()
    table = fs.pair_table(store).set_index(["image", "layer"])
    names = ["coffee", "rocket"]
    syn = as_batch([load_rgb(syn_dir / f"{n}.png") for n in names])
    real = as_batch([load_rgb(real_dir / f"{n}.png") for n in names])
    with torch.no_grad():
        comp = loss.components(syn, real)
    for i, n in enumerate(names):
        for layer in LAYERS:
            row = table.loc[(f"synthetic/{n}.png", layer)]
            # the store holds float16 features: equal up to that rounding
            assert float(comp[layer]["mse"][i]) == pytest.approx(row["mse"], rel=1e-3)
            if layer == "avgpool":
                assert np.isnan(row["ssim"]) and torch.isnan(comp[layer]["ssim"][i])
            else:
                assert float(comp[layer]["ssim"][i]) == pytest.approx(row["ssim"], abs=1e-4)
    alpha_one = FeatureRealismLoss(backbone(), layers=["layer2"], alpha=1.0)
    with torch.no_grad():
        total = float(alpha_one(syn, real))
    want = table.xs("layer2", level="layer").loc[[f"synthetic/{n}.png" for n in names], "mse"].mean()
    assert total == pytest.approx(want, rel=1e-3)


def test_gradient_descent_on_a_synthetic_image_lowers_it():
    torch.manual_seed(0)
    loss = FeatureRealismLoss(backbone(), layers=["layer1", "layer2"], alpha=0.5)
    real = as_batch([photo("chelsea")])
    x = as_batch([degrade(photo("chelsea"), 3)]).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.02)
    values = []
    for _ in range(6):
        opt.zero_grad()
        value = loss(x, real)
        value.backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        values.append(value.item())
    with torch.no_grad():
        values.append(float(loss(x, real)))
    assert values[-1] < 0.8 * values[0], values
    assert all(p.grad is None for p in backbone().model.parameters())  # the network stays frozen


def test_unpaired_statistics_term_ranks_and_trains():
    bases = [photo(n) for n in ("astronaut", "coffee", "rocket")]
    real = as_batch(bases)
    mild = as_batch([degrade(b, 1, seed=i) for i, b in enumerate(bases)])
    strong = as_batch([degrade(b, 3, seed=i) for i, b in enumerate(bases)])
    unpaired = FeatureRealismLoss(backbone(), layers=["layer1", "layer3"], mode="unpaired")
    with torch.no_grad():
        assert float(unpaired(mild, real)) < float(unpaired(strong, real))
    x = strong[:2].clone().requires_grad_(True)  # batch sizes may differ when unpaired
    unpaired(x, real).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_preprocessing_in_torch_equals_the_stores():
    """For SSD the loss applies model.transform to float images: the store's own preprocessing."""
    img = photo("rocket", 50)
    loss = FeatureRealismLoss("ssdlite320_mobilenet_v3_large", weights="random:0")
    torch.testing.assert_close(loss.backbone.preprocess_float(as_batch([img])), loss.backbone.preprocess([img]),
                               atol=1e-5, rtol=1e-5)
    # classifiers: a uint8 resize rounds to 1/255, a float one does not; no resize, no difference
    loss = FeatureRealismLoss(backbone(), layers=["layer1"])
    got, want = loss.backbone.preprocess_float(as_batch([img])), loss.backbone.preprocess([img])
    assert (got - want).abs().max() < 2.5 / 255 / 0.225
    img = photo("rocket", 256)
    torch.testing.assert_close(loss.backbone.preprocess_float(as_batch([img])), loss.backbone.preprocess([img]),
                               atol=1e-5, rtol=1e-5)
    # timm (efficientnet_lite0): PIL's bicubic resize on uint8 against torch's on floats; at the
    # input size there is no resize, and no difference
    from fakesegment_nb.backbones import build_backbone

    lite = build_backbone("efficientnet_lite0")
    img = photo("rocket", 320)
    torch.testing.assert_close(lite.preprocess_float(as_batch([img])), lite.preprocess([img]), atol=1e-5, rtol=1e-5)
    img = photo("rocket", 200)
    assert (lite.preprocess_float(as_batch([img])) - lite.preprocess([img])).abs().mean() < 2 / 255 / 0.5


def test_bad_arguments_are_clear_errors():
    with pytest.raises(FakesegmentError, match="alpha"):
        FeatureRealismLoss(backbone(), layers=["layer1"], alpha=2)
    with pytest.raises(FakesegmentError, match="does not return layer"):
        FeatureRealismLoss(backbone(), layers=["layer9"])
    with pytest.raises(FakesegmentError, match="mode"):
        FeatureRealismLoss(backbone(), layers=["layer1"], mode="both")
    loss = FeatureRealismLoss(backbone(), layers=["layer1"])
    with pytest.raises(FakesegmentError, match="differ in size"):
        loss(torch.rand(2, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(FakesegmentError, match="float tensor"):
        loss(torch.rand(3, 32, 32), torch.rand(3, 32, 32))


def test_feature_moments_are_numpys_mean_and_covariance_of_the_per_location_vectors():
    from fakesegment_nb.loss import feature_moments

    f = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mu, cov = feature_moments(f)
    vectors = f.numpy().transpose(0, 2, 3, 1).reshape(-1, 5)  # one row per (image, y, x)
    np.testing.assert_allclose(mu.numpy(), vectors.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov.numpy(), np.cov(vectors, rowvar=False), rtol=1e-5, atol=1e-6)
