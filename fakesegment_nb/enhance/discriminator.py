"""A patch discriminator on the frozen network's features, for adversarial enhancer training.

The ``domain`` map (:mod:`fakesegment_nb.maps.domain`) tells renders from photos with a classifier on
the frozen network's per-location features. :class:`PatchDiscriminator` is that idea made trainable:
per training layer, a two-layer 1x1-convolution head on each image's instance-normalised features
(local structure, not global tone), one logit per location ("this patch looks real"). Trained
alongside the enhancer with the non-saturating logistic loss (:func:`discriminator_loss`,
:func:`generator_loss`), as projected-GAN style enhancers put a small trainable head on a frozen
feature extractor. It exists only in training; the enhancer file does not keep it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchDiscriminator", "discriminator_loss", "generator_loss"]


class PatchDiscriminator(nn.Module):
    """``{layer: (B, C, h, w)}`` features -> ``{layer: (B, 1, h, w)}`` logits (real > 0).

    ``channels``: ``{layer: C}``. Each image's features are instance-normalised (every channel to
    mean 0 and variance 1 over the image's locations) before the head: the discriminator sees how
    a patch differs from the rest of its image -- texture, local contrast, detail -- and not the
    image's overall tone and colour, which the realism term's moments match already. A first
    version saw the features standardised only by the real images' moments; it learned the global
    look, and pushed the tone curve until held-out renders were overexposed (docs/loss.md, "Fifth
    round")."""

    def __init__(self, channels: dict[str, int], hidden: int = 32):
        super().__init__()
        self.layers = list(channels)
        self.heads = nn.ModuleDict({l: nn.Sequential(nn.Conv2d(int(c), hidden, 1), nn.LeakyReLU(0.2),
                                                     nn.Conv2d(hidden, 1, 1)) for l, c in channels.items()})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {l: self.heads[l](F.instance_norm(feats[l].float(), eps=1e-5)) for l in self.layers}


def discriminator_loss(real_logits: dict, fake_logits: dict) -> torch.Tensor:
    """Logistic loss of the discriminator, summed over layers: real patches -> 1, enhanced -> 0."""
    return sum(F.softplus(-real_logits[l]).mean() + F.softplus(fake_logits[l]).mean() for l in real_logits)


def generator_loss(fake_logits: dict) -> torch.Tensor:
    """Non-saturating generator loss, averaged over layers: enhanced patches should be called real."""
    return sum(F.softplus(-v).mean() for v in fake_logits.values()) / max(len(fake_logits), 1)
