"""Which weights a backbone runs with: ``auto | coco | random[:SEED] | FILE`` (DESIGN.md section 7).

Nothing here downloads unless ``FAKESEGMENT_ALLOW_DOWNLOAD=1`` is set: ``auto`` and ``coco`` look
in torchvision's cache (``$TORCH_HOME/hub/checkpoints``) first.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .backbones import SSD_LAYERS, Backbone, build_backbone
from .errors import FakesegmentError
from .manifest import file_sha256


@dataclass(frozen=True)
class WeightsInfo:
    """What a store records about the weights that made it."""

    label: str          # "coco", "imagenet:IMAGENET1K_V2", "random:0", "file:<sha256>"
    trained: bool
    warning: str = ""


def _pretrained_enum(model: str):
    import torchvision
    from torchvision.models import detection

    if model in SSD_LAYERS:
        enum = {"ssd300_vgg16": detection.SSD300_VGG16_Weights,
                "ssdlite320_mobilenet_v3_large": detection.SSDLite320_MobileNet_V3_Large_Weights}[model]
        return enum.COCO_V1, "coco"
    w = torchvision.models.get_model_weights(model.split(":", 1)[1]).DEFAULT
    return w, f"imagenet:{w.name}"


def cache_path(model: str) -> Path:
    """Where torchvision's cache keeps the pretrained weights of ``model``."""
    w, _ = _pretrained_enum(model)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name


def _download_allowed() -> bool:
    return os.environ.get("FAKESEGMENT_ALLOW_DOWNLOAD", "") in ("1", "true", "yes")


def _load_pretrained(backbone: Backbone) -> str | None:
    """Load cached (or, if allowed, downloaded) pretrained weights; None when there are none."""
    w, label = _pretrained_enum(backbone.name)
    path = cache_path(backbone.name)
    if not path.is_file() and not _download_allowed():
        return None
    try:
        state = torch.hub.load_state_dict_from_url(w.url, progress=False, check_hash=False,
                                                   map_location="cpu", weights_only=True)
    except Exception as exc:  # network errors, a truncated cache file
        if path.is_file():
            raise FakesegmentError(f"cached weights {path} cannot be read ({exc}); delete it") from None
        return None
    _load_state(backbone, state, str(path))
    return label


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
            raise FakesegmentError(f"--weights {spec}: the seed after 'random:' must be an integer") from None
    return None


def load_backbone(model: str = "ssd300_vgg16", weights: str = "auto",
                  layers: Sequence[str] | None = None, device: str = "cpu",
                  ) -> tuple[Backbone, WeightsInfo]:
    """Build ``model`` and give it the weights ``weights`` asks for.

    Parameters
    ----------
    weights : ``auto`` (pretrained from the cache, else random with a warning), ``coco``
        (pretrained, never a fallback), ``random`` / ``random:SEED``, or a state-dict file.
    """
    seed = parse_random_seed(weights)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FakesegmentError(f"--device {device}: no CUDA device is available here")
    if seed is not None or weights == "auto":
        torch.manual_seed(0 if seed is None else seed)
    backbone = build_backbone(model, layers)
    if weights == "auto":
        label = _load_pretrained(backbone)
        if label:
            info = WeightsInfo(label, True)
        else:
            msg = (f"no pretrained weights for {model} in {cache_path(model)}: using random weights "
                   "(seed 0); statistics and maps reflect an untrained network")
            warnings.warn(msg, stacklevel=2)
            info = WeightsInfo("random:0", False, msg)
    elif weights in ("coco", "pretrained"):
        label = _load_pretrained(backbone)
        if not label:
            raise FakesegmentError(
                f"--weights {weights}: {cache_path(model).name} is not in torchvision's cache; "
                f"put it at {cache_path(model)} (or set TORCH_HOME) -- nothing is downloaded")
        info = WeightsInfo(label, True)
    elif seed is not None:
        info = WeightsInfo(f"random:{seed}", False,
                           f"random weights (seed {seed}): statistics and maps reflect an untrained network")
    else:
        path = Path(weights)
        if not path.is_file():
            raise FakesegmentError(f"--weights {weights}: not auto, coco, random[:SEED] or an existing file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            # torch's first sentence says what failed; the rest advises weights_only=False,
            # which we never do for a file given on the command line
            first = str(exc).splitlines()[0].split(". ")[0] if str(exc) else ""
            raise FakesegmentError(f"weights file {path} is not a readable state dict "
                                   f"({type(exc).__name__}: {first})") from None
        _load_state(backbone, state, str(path))
        info = WeightsInfo(f"file:{file_sha256(path)}", True)
    backbone.model.eval()
    backbone.to(device)
    return backbone, info
