"""A small registry of networks whose convolutional feature maps we extract.

Each entry builds the whole torchvision model (so that its weights and preprocessing are
torchvision's own) and exposes the named feature maps of its backbone:

* ``ssd300_vgg16`` (default): ``model.backbone`` outputs 0-5, conv4_3 after its L2Norm.
* ``ssdlite320_mobilenet_v3_large``: its backbone's six feature maps.
* ``torchvision:<classifier>`` with ``layers`` naming graph nodes, through
  :func:`torchvision.models.feature_extraction.create_feature_extractor`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .errors import FakesegmentError

DEFAULT_MODEL = "ssd300_vgg16"

SSD_LAYERS = {
    "ssd300_vgg16": ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"],
    "ssdlite320_mobilenet_v3_large": ["c4_expand", "c5", "extra1", "extra2", "extra3", "extra4"],
}


@dataclass
class Backbone:
    """A network ready to turn decoded RGB images into named feature maps.

    Attributes
    ----------
    name : registry name, e.g. ``"ssd300_vgg16"`` or ``"torchvision:resnet50"``.
    layers : ordered layer names this backbone returns.
    input_size : ``(height, width)`` of the network input after preprocessing.
    model : the whole torchvision model; its ``state_dict`` is what weights files hold.
    """

    name: str
    layers: list[str]
    input_size: tuple[int, int]
    model: torch.nn.Module
    _preprocess: Callable[[list[torch.Tensor]], torch.Tensor] = field(repr=False)
    _forward: Callable[[torch.Tensor], "OrderedDict[str, torch.Tensor]"] = field(repr=False)
    device: torch.device = torch.device("cpu")

    def preprocess(self, images: Sequence) -> torch.Tensor:
        """uint8 RGB arrays ``(H, W, 3)`` -> the model's own normalised input batch."""
        tensors = [torch.as_tensor(im).permute(2, 0, 1).to(self.device) for im in images]
        return self._preprocess(tensors)

    def features(self, batch: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Input batch -> ``{layer: (B, C, h, w)}`` for :attr:`layers`, in order.

        The batch runs in channels-last memory layout (see :meth:`to`); the values are the
        same up to float32 summation order.
        """
        out = self._forward(batch.contiguous(memory_format=torch.channels_last))
        res = OrderedDict()
        for name in self.layers:
            t = out[name]
            if t.ndim == 2:
                t = t[:, :, None, None]
            if t.ndim != 4:
                raise FakesegmentError(f"layer {name} of {self.name} gives a {t.ndim}-D output; "
                                       "feature maps must be (batch, channel, y, x)")
            res[name] = t
        return res

    def to(self, device: str | torch.device) -> "Backbone":
        """Move the model to ``device`` in channels-last layout: oneDNN's convolutions run
        about 20% (VGG) to 40% (MobileNet) faster on this CPU with it (benchmarks/bench_extract.py)."""
        self.device = torch.device(device)
        self.model.to(self.device, memory_format=torch.channels_last)
        return self


def _pick_layers(available: Sequence[str], layers: Sequence[str] | None, model: str) -> list[str]:
    if not layers:
        return list(available)
    unknown = [l for l in layers if l not in available]
    if unknown:
        names = ", ".join(available)
        raise FakesegmentError(f"{model} has no layer {', '.join(unknown)}; its layers are "
                               f"{names if len(names) < 300 else names[:300] + ' ...'}")
    return list(layers)


def _build_ssd(name: str, layers: Sequence[str] | None) -> Backbone:
    from torchvision.models import detection

    model = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=91).eval()
    names = SSD_LAYERS[name]
    chosen = _pick_layers(names, layers, name)
    size = tuple(model.transform.fixed_size or (model.transform.min_size[0],) * 2)

    def preprocess(images):
        return model.transform([im.float().div_(255) for im in images])[0].tensors

    def forward(x):
        out = model.backbone(x)
        return OrderedDict((n, out[str(i)]) for i, n in enumerate(names) if n in chosen)

    return Backbone(name, chosen, size, model, preprocess, forward)


def _build_torchvision(name: str, layers: Sequence[str] | None) -> Backbone:
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    arch = name.split(":", 1)[1]
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise FakesegmentError(f"torchvision has no classification model {arch!r}")
    model = torchvision.models.get_model(arch, weights=None).eval()
    nodes = get_graph_node_names(model)[1]
    # graph nodes and the modules that hold them (``layer3`` = the output of that block)
    available = list(dict.fromkeys([*(m for m, _ in model.named_modules() if m), *nodes]))
    if not layers:
        hint = ", ".join(n for n in available if "." not in n)
        raise FakesegmentError(f"{name} needs --layers (graph nodes or modules, e.g. {hint})")
    chosen = _pick_layers(available, layers, name)
    transform = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    extractor = create_feature_extractor(model, return_nodes={l: l for l in chosen}).eval()
    size = (transform.crop_size[0],) * 2

    def preprocess(images):
        return torch.stack([transform(im) for im in images])

    return Backbone(name, chosen, size, model, preprocess, extractor)


def model_names() -> list[str]:
    return [*SSD_LAYERS, "torchvision:<classifier>"]


def build_backbone(name: str = DEFAULT_MODEL, layers: Sequence[str] | None = None) -> Backbone:
    """Build a registered backbone with torchvision's default (random) initialisation.

    Seed torch first for reproducible random weights; load trained weights with
    :func:`fakesegment_nb.weights.load_backbone`.
    """
    if name in SSD_LAYERS:
        return _build_ssd(name, layers)
    if name.startswith("torchvision:"):
        return _build_torchvision(name, layers)
    raise FakesegmentError(f"unknown model {name!r}; choose one of {', '.join(model_names())}")
