"""A patch discriminator on the frozen network's features, for adversarial enhancer training.

The ``domain`` map (:mod:`fakesegment_nb.maps.domain`) tells renders from photos with a classifier on
the frozen network's per-location features. :class:`PatchDiscriminator` is that idea made trainable:
per training layer, a two-layer 1x1-convolution head on the features standardised by the real
images' per-channel mean and standard deviation (from the moments the realism term already holds),
one logit per location ("this patch looks real"). Trained alongside the enhancer with the
non-saturating logistic loss (:func:`discriminator_loss`, :func:`generator_loss`), as projected-GAN
style enhancers use a frozen feature extractor under a small trainable head. It exists only in
training; the enhancer file does not keep it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchDiscriminator", "discriminator_loss", "generator_loss"]


class PatchDiscriminator(nn.Module):
    """``{layer: (B, C, h, w)}`` features -> ``{layer: (B, 1, h, w)}`` logits (real > 0).

    ``bank``: ``{layer: (mean (C,), covariance (C, C))}`` of the real images
    (:func:`fakesegment_nb.enhance.train.real_moments`), used to standardise each channel."""

    def __init__(self, bank: dict[str, tuple[torch.Tensor, torch.Tensor]], hidden: int = 32):
        super().__init__()
        self.layers = list(bank)
        self.heads = nn.ModuleDict()
        for l, (mu, cov) in bank.items():
            self.register_buffer(f"mu_{l}", mu.detach().clone().float().view(1, -1, 1, 1))
            sd = cov.detach().diagonal().clamp_min(1e-8).sqrt().float()
            self.register_buffer(f"sd_{l}", sd.view(1, -1, 1, 1))
            c = int(mu.numel())
            self.heads[l] = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.LeakyReLU(0.2), nn.Conv2d(hidden, 1, 1))

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for l in self.layers:
            x = (feats[l].float() - getattr(self, f"mu_{l}")) / getattr(self, f"sd_{l}")
            out[l] = self.heads[l](x)
        return out


def discriminator_loss(real_logits: dict, fake_logits: dict) -> torch.Tensor:
    """Logistic loss of the discriminator, summed over layers: real patches -> 1, enhanced -> 0."""
    return sum(F.softplus(-real_logits[l]).mean() + F.softplus(fake_logits[l]).mean() for l in real_logits)


def generator_loss(fake_logits: dict) -> torch.Tensor:
    """Non-saturating generator loss, averaged over layers: enhanced patches should be called real."""
    return sum(F.softplus(-v).mean() for v in fake_logits.values()) / max(len(fake_logits), 1)
