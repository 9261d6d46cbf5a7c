"""A feature-space realism loss: the statistics tables, turned into a training objective.

:class:`FeatureRealismLoss` runs a frozen backbone (the one the stores are made with) on two
batches of float images and compares their feature maps layer by layer:

* ``paired``: ``sum_l w_l * (alpha * MSE_l + (1 - alpha) * (1 - SSIM_l))`` -- the ``mse`` and
  ``ssim`` of ``pairs.csv``, computed the same way (SSIM per channel with the channel pair's
  joint range, channels of range 0 skipped);
* ``unpaired``: ``sum_l w_l * (mean_c (mu_s - mu_r)^2 + mean_cc' (S_s - S_r)^2)`` -- the
  per-layer channel means ``mu`` and covariances ``S`` (ddof=1) of the per-location feature
  vectors of each batch, matched.

Images are float tensors ``(B, 3, H, W)`` in ``[0, 1]``; the model's own preprocessing (for SSD,
``model.transform``: resize and normalise) is applied in torch, so the loss is differentiable
with respect to the images.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .backbones import Backbone
from .errors import FakesegmentError
from .ssim import WIN_SIZE, feature_ssim

__all__ = ["FeatureRealismLoss", "feature_moments"]


def feature_moments(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps ``(B, C, h, w)`` -> the mean ``(C,)`` and covariance ``(C, C)`` (ddof=1, in
    float32, differentiable) of their per-location vectors: every ``(y, x)`` of every image, one
    vector of ``C`` channels. What the unpaired term of :class:`FeatureRealismLoss` matches."""
    x = f.float().permute(1, 0, 2, 3).reshape(f.shape[1], -1)  # (C, B*h*w)
    mu = x.mean(dim=1)
    xc = x - mu[:, None]
    n = max(x.shape[1] - 1, 1)
    return mu, xc @ xc.T / n


class FeatureRealismLoss(torch.nn.Module):
    """How far synthetic images are from real ones in a frozen network's feature space.

    Parameters
    ----------
    backbone : a registered model name (``"ssd300_vgg16"``, ``"ssdlite320_mobilenet_v3_large"``,
        ``"torchvision:<classifier>"``) or a :class:`~fakesegment_nb.backbones.Backbone`.
    weights : weights spec when ``backbone`` is a name (``auto | coco | random[:SEED] | FILE``).
    layers : layers to compare (default: all of the backbone's).
    layer_weights : ``{layer: w_l}`` (default 1 for every layer).
    alpha : share of MSE against ``1 - SSIM`` in the paired loss, in ``[0, 1]``.
    mode : ``"paired"`` (default; ``synthetic[i]`` shows the scene of ``real[i]``) or
        ``"unpaired"`` (statistics matching; batch sizes may differ).
    device : where a backbone given by name is built.

    Notes
    -----
    The backbone is frozen (``requires_grad=False``, eval mode); gradients flow to the
    images. The SSIM data range of a channel is a constant of the metric (no gradient flows
    through it). For a layer smaller than 11x11, where SSIM is undefined (NaN in
    ``pairs.csv``), the paired term of that layer is ``w_l * MSE``.
    """

    def __init__(self, backbone: str | Backbone = "ssd300_vgg16", weights: str = "auto",
                 layers: Sequence[str] | None = None, layer_weights: Mapping[str, float] | None = None,
                 alpha: float = 0.5, mode: str = "paired", device: str = "cpu"):
        super().__init__()
        if isinstance(backbone, str):
            from .weights import load_backbone

            backbone, _ = load_backbone(backbone, weights, layers, device)
        if not isinstance(backbone, Backbone):
            raise FakesegmentError("backbone must be a model name or a fakesegment_nb Backbone")
        self.layers = list(layers) if layers else list(backbone.layers)
        missing = [l for l in self.layers if l not in backbone.layers]
        if missing:
            raise FakesegmentError(f"backbone {backbone.name} does not return layer(s) {', '.join(missing)}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise FakesegmentError(f"alpha must lie in [0, 1], got {alpha}")
        if mode not in ("paired", "unpaired"):
            raise FakesegmentError(f"mode must be 'paired' or 'unpaired', got {mode!r}")
        lw = dict(layer_weights or {})
        unknown = set(lw) - set(self.layers)
        if unknown:
            raise FakesegmentError(f"layer_weights name layers the loss does not use: {sorted(unknown)}")
        self.layer_weights = {l: float(lw.get(l, 1.0)) for l in self.layers}
        self.alpha, self.mode = float(alpha), mode
        self.backbone = backbone
        self.model = backbone.model  # registered, so .to(device) moves it
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # the backbone never leaves eval mode (batch norm statistics)
        return self

    # -- features ---------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Float images ``(B, 3, H, W)`` in [0, 1] -> ``{layer: (B, C, h, w)}``."""
        if not (isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3
                and images.is_floating_point()):
            raise FakesegmentError("images must be a float tensor (batch, 3, height, width) in [0, 1]")
        feats = self.backbone.features(self.backbone.preprocess_float(images))
        return {l: feats[l] for l in self.layers}

    # -- paired -----------------------------------------------------------------------------
    @staticmethod
    def _pair_terms(a: torch.Tensor, b: torch.Tensor):
        """(mse (B,), ssim (B,) or None for maps smaller than the SSIM window)."""
        if a.dtype in (torch.float16, torch.bfloat16):
            a, b = a.float(), b.float()
        mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
        if a.shape[-1] < WIN_SIZE or a.shape[-2] < WIN_SIZE:
            return mse, None
        return mse, feature_ssim(a, b)  # differentiable; the same function as pairs.csv

    def _paired_features(self, synthetic, real):
        if synthetic.shape[0] != real.shape[0]:
            raise FakesegmentError(f"paired batches differ in size: {synthetic.shape[0]} and {real.shape[0]}")
        return self.features(synthetic), self.features(real)

    def components(self, synthetic: torch.Tensor, real: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """Per layer, per image: ``{"mse": (B,), "ssim": (B,)}`` as ``pairs.csv`` defines them.

        ``ssim`` is NaN for maps smaller than 11x11 and where no channel has a range.
        """
        fs, fr = self._paired_features(synthetic, real)
        out = {}
        for l in self.layers:
            mse, ssim = self._pair_terms(fs[l], fr[l])
            out[l] = {"mse": mse, "ssim": torch.full_like(mse, float("nan")) if ssim is None else ssim}
        return out

    def paired_loss(self, synthetic: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``sum_l w_l (alpha MSE + (1 - alpha)(1 - SSIM))``, averaged over the batch."""
        fs, fr = self._paired_features(synthetic, real)
        total = 0.0
        for l in self.layers:
            mse, ssim = self._pair_terms(fs[l], fr[l])
            if ssim is None:
                term = mse
            else:
                # no channel with a range: both maps are the same constant, SSIM 1
                ssim = torch.where(torch.isnan(ssim), torch.ones_like(ssim), ssim)
                term = self.alpha * mse + (1 - self.alpha) * (1 - ssim)
            total = total + self.layer_weights[l] * term.mean()
        return total

    # -- unpaired ---------------------------------------------------------------------------
    def unpaired_loss(self, synthetic: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``sum_l w_l (mean (mu_s - mu_r)^2 + mean (S_s - S_r)^2)`` over per-location vectors."""
        fs, fr = self.features(synthetic), self.features(real)
        total = 0.0
        for l in self.layers:
            ms, cs = feature_moments(fs[l])
            mr, cr = feature_moments(fr[l])
            total = total + self.layer_weights[l] * (((ms - mr) ** 2).mean() + ((cs - cr) ** 2).mean())
        return total

    def forward(self, synthetic: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The loss of ``synthetic`` against ``real`` (a scalar tensor)."""
        if self.mode == "paired":
            return self.paired_loss(synthetic, real)
        return self.unpaired_loss(synthetic, real)
