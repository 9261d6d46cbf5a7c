import numpy as np
import pytest
import torch

from fakesegment_nb.errors import FakesegmentError, ParameterError
from fakesegment_nb.weights import cache_path, load_backbone

FAST = "ssdlite320_mobilenet_v3_large"


def _first_param(backbone):
    return next(iter(backbone.model.state_dict().values())).clone()


def test_random_weights_are_seeded():
    a, ia = load_backbone(FAST, "random:3")
    b, _ = load_backbone(FAST, "random:3")
    c, ic = load_backbone(FAST, "random")
    assert ia.label == "random:3" and ic.label == "random:0" and not ia.trained
    assert torch.equal(_first_param(a), _first_param(b))
    assert not torch.equal(_first_param(a), _first_param(c))


def test_auto_without_cache_falls_back_to_random_with_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.warns(UserWarning, match="using random weights"):
        _, info = load_backbone(FAST, "auto")
    assert info.label == "random:0" and not info.trained and "untrained" in info.warning


def test_coco_offline_is_one_line_naming_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FakesegmentError) as err:
        load_backbone("ssd300_vgg16", "coco")
    msg = str(err.value)
    assert "\n" not in msg
    assert "ssd300_vgg16_coco-b556d3b4.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg


def test_coco_loads_the_cached_state_dict(tmp_path, monkeypatch):
    """The real loading path: a state dict placed in torchvision's cache under TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(123)
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    ref = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91).eval()
    path = cache_path(FAST)
    assert path.parent == tmp_path / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    for spec in ("coco", "auto"):
        bb, info = load_backbone(FAST, spec)
        assert info.label == "coco" and info.trained and info.warning == ""
        img = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
        with torch.no_grad():
            want = ref.backbone(ref.transform([torch.from_numpy(img).permute(2, 0, 1).float() / 255])[0].tensors)["0"]
            got = bb.features(bb.preprocess([img]))["c4_expand"]
        # ssdlite's random activations are tiny (~1e-13): compare relative to their scale (the
        # backbone runs channels-last, so entries near 0 differ by float32 summation order)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        assert float(want.abs().max()) > 0
    other, _ = load_backbone(FAST, "random:0")
    with torch.no_grad():
        assert not torch.allclose(other.features(other.preprocess([img]))["c4_expand"], want, rtol=1e-3, atol=0)


def test_weights_file_for_another_architecture_names_the_keys(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(FakesegmentError) as err:
        load_backbone(FAST, str(path))
    msg = str(err.value)
    assert "do not fit ssdlite320_mobilenet_v3_large" in msg
    assert "missing keys: backbone." in msg and "122 unexpected keys: bn1.bias" in msg
    assert "\n" not in msg


def test_weights_file_roundtrip_and_garbage(tmp_path):
    bb, _ = load_backbone(FAST, "random:7")
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": bb.model.state_dict()}, path)
    bb2, info = load_backbone(FAST, str(path))
    assert info.label.startswith("file:") and len(info.label) == 5 + 64 and info.trained
    assert torch.equal(_first_param(bb2), _first_param(bb))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(FakesegmentError, match=r"junk.pth is not a readable state dict \(UnpicklingError: [^.]*\)$"):
        load_backbone(FAST, str(junk))
    with pytest.raises(FakesegmentError, match="not auto, coco, imagenet, random"):
        load_backbone(FAST, str(tmp_path / "nope.pth"))


def test_torchvision_classifier_backbone():
    bb, info = load_backbone("torchvision:resnet18", "random:0", layers=["layer1", "layer3"])
    assert bb.layers == ["layer1", "layer3"] and bb.input_size == (224, 224)
    x = bb.preprocess([np.zeros((50, 70, 3), np.uint8)])
    assert tuple(x.shape) == (1, 3, 224, 224)
    with torch.no_grad():
        out = bb.features(x)
    assert tuple(out["layer1"].shape) == (1, 64, 56, 56) and tuple(out["layer3"].shape) == (1, 256, 14, 14)
    with pytest.raises(ParameterError, match="layers is required for torchvision:resnet18") as exc:
        load_backbone("torchvision:resnet18", "random:0")
    assert exc.value.param == "layers"  # the CLI says --layers (test_extract)
    with pytest.raises(FakesegmentError, match="has no layer nope"):
        load_backbone("torchvision:resnet18", "random:0", layers=["nope"])
    with pytest.raises(FakesegmentError, match="unknown model"):
        load_backbone("yolo", "random:0")


def test_every_packaged_lite_is_found_in_its_package():
    """The three EfficientNet-Lites' weights are looked for inside their installed packages."""
    from fakesegment_nb.lite import LITE

    for name, w in LITE.items():
        path = cache_path(name)
        assert path.name == w.file_name and path.is_file() and path.parent.parent.name == w.module, path
