"""Training the enhancer with the feature-space realism loss.

The objective, for a batch of synthetic images ``s``, enhanced ``e = E(s)``, and a batch of
real images ``r`` (not the same scenes; DESIGN.md section 2)::

    L = sum_l  w_l * unpaired_l(e, r)                  FeatureRealismLoss, statistics matching
      + paired_weight * paired(e, twin(s))             where s has a real twin (same stem)
      + content_weight * | pool_k(e) - pool_k(s) |_1   the content term

``unpaired_l`` is FeatureRealismLoss's statistics-matching term with the real side's moments
accumulated once over all real training images (up to ``max_real``): drawing 4 real scenes per
step made the term mostly scene-sampling noise (the real side alone varied by 20-40% between
batches on the tuning probe, about as much as all the grain in the gap).
``w_l`` = 1 / ``unpaired_l`` of the first batch before any training, so every training layer
starts at 1 whatever the scale of its features. The content term compares ``k x k``-averaged
images: the enhancer may change grain, sharpness and colour, not the scene.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import __version__
from ..errors import FakesegmentError, ImageError, ParameterError
from ..images import load_rgb
from ..manifest import scan_folder
from torch.utils.data import DataLoader, Subset

from .data import ImageFiles, infinite_loader, paired_keys, training_transform
from .network import Enhancer, save_enhancer

__all__ = ["train_enhancer", "TrainResult", "DEFAULT_MODEL", "DEFAULT_LAYERS", "DEFAULT_STEPS", "DEFAULT_CROP",
           "DEFAULT_CONTENT_WEIGHT"]

DEFAULT_MODEL = "efficientnet_lite0"
# every stage the gap is measured in (issue 20 asks for every layer; docs/loss.md). No layer is then
# an independent check; give layers=("p3", "p4") (the earlier default) to keep p2 and p5 as one.
DEFAULT_LAYERS = ("p2", "p3", "p4", "p5")
# training layers when none are given: these for the models named, every layer otherwise
TRAIN_LAYERS = {DEFAULT_MODEL: DEFAULT_LAYERS}
DEFAULT_STEPS = 150
# None: whole images resized to the network's input size, the scale at which the gap is measured.
# crop=224 (random crops at the images' own resolution, fed to the network at that size) is an
# option: on the warehouse tuning split (seed 0) it left p2 further from the photos (+3% to +8%
# with content weight 10 or 30, fed at 224 or 320), where whole images moved every layer closer
# (docs/loss.md, "Genuine renders").
DEFAULT_CROP = None
DEFAULT_CONTENT_WEIGHT = 10.0


@dataclass
class TrainResult:
    """What :func:`train_enhancer` made: the network, its metadata (what the file records),
    the loss at each step (``total, realism, paired, content``) and where it was saved."""

    enhancer: Enhancer
    meta: dict
    history: list[dict] = field(default_factory=list)
    path: Path | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def real_moments(realism, dataset, max_real: int, seed: int, device, progress: bool = False,
                 samples: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the mean and covariance (ddof=1) of the per-location feature vectors of up to
    ``max_real`` images of ``dataset`` (chosen by ``seed``): what ``FeatureRealismLoss``'s
    unpaired term computes of its real batch, with every real image in the batch (accumulated in
    float64, without gradients). With ``samples``, that many items, going through the images in
    shuffled rounds (for random crops: several crops of each image)."""
    from tqdm.auto import tqdm

    g = torch.Generator()
    g.manual_seed(int(seed))
    n = max(int(samples) if samples else min(int(max_real), len(dataset)), 1)
    idx: list[int] = []
    while len(idx) < n:
        idx += torch.randperm(len(dataset), generator=g).tolist()
    idx = idx[:n]
    loader = DataLoader(Subset(dataset, idx), batch_size=8, shuffle=False, num_workers=0)
    acc: dict[str, list] = {}
    with torch.no_grad():
        for batch in tqdm(loader, desc="real moments", unit="batch", disable=not progress, file=sys.stderr):
            for l, f in realism.features(batch.to(device)).items():
                x = f.double().permute(1, 0, 2, 3).reshape(f.shape[1], -1)
                n, s1, s2 = acc.get(l, (0, 0.0, 0.0))
                acc[l] = (n + x.shape[1], s1 + x.sum(1), s2 + x @ x.T)
    out = {}
    for l, (n, s1, s2) in acc.items():
        mu = s1 / n
        out[l] = (mu.float(), ((s2 - n * torch.outer(mu, mu)) / max(n - 1, 1)).float())
    return out


def unpaired_terms(realism, synthetic: torch.Tensor, bank, running: dict | None = None,
                   momentum: float = 0.0) -> dict[str, torch.Tensor]:
    """Per layer, ``FeatureRealismLoss``'s unpaired term ``mean (mu_s - mu_r)^2 + mean (S_s - S_r)^2``
    of a synthetic batch against the real moments ``bank`` (:func:`real_moments`).

    With ``running`` (a dict, updated in place) and ``momentum`` in (0, 1), the synthetic moments
    are ``momentum * running + (1 - momentum) * batch``, the running part without gradient: the
    gap is then estimated from many batches while the gradient still flows through this batch's
    images (a batch of a few scenes alone mostly measures which scenes it drew).
    """
    from ..loss import feature_moments

    out = {}
    for l, f in realism.features(synthetic).items():
        ms, cs = feature_moments(f)
        if running is not None and momentum > 0:
            if l in running:
                rm, rc = running[l]
                ms, cs = momentum * rm + (1 - momentum) * ms, momentum * rc + (1 - momentum) * cs
            running[l] = (ms.detach(), cs.detach())
        mr, cr = bank[l]
        out[l] = ((ms - mr) ** 2).mean() + ((cs - cr) ** 2).mean()
    return out


@contextlib.contextmanager
def _deterministic(device: str = "cpu"):
    """Deterministic algorithms on the CPU (same seed and data, same state dict). On CUDA they are
    left as they are: with them on, torch refuses kernels that have no deterministic CUDA version
    (the backward of the network's bilinear resize among them) and cuBLAS wants
    CUBLAS_WORKSPACE_CONFIG set, so ``--device cuda`` would stop with a RuntimeError (torch's
    documented behaviour; no GPU was at hand to run it). A GPU run is reproducible only up to
    float summation order."""
    if not str(device).startswith("cpu"):
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _readable(entries, domain: str, notes: list[str]):
    good = []
    for e in entries:
        try:
            load_rgb(e.path)
            good.append(e)
        except ImageError as exc:
            notes.append(f"skipped unreadable {domain} image: {exc}")
    if not good:
        raise FakesegmentError(f"no readable {domain} image to train on")
    return good


def train_enhancer(real, synthetic, out=None, *, model: str = DEFAULT_MODEL, weights: str = "auto",
                   layers: Sequence[str] | None = None, steps: int = DEFAULT_STEPS,
                   batch_size: int = 4, seed: int = 0, device: str = "cpu", lr: float = 2e-3, tone_lr: float = 1.0,
                   grain_lr: float = 50.0,
                   content_weight: float = DEFAULT_CONTENT_WEIGHT, content_pool: int = 4,
                   paired_weight: float = 0.0, width: int = 8, depth: int = 3, max_real: int = 256,
                   momentum: float = 0.5, crop: int | None = DEFAULT_CROP,
                   progress: bool = True) -> TrainResult:
    """Train an :class:`~fakesegment_nb.enhance.network.Enhancer` on unpaired folders.

    Parameters
    ----------
    real, synthetic : image folders (recursive; as ``fakesegment extract`` reads them).
    out : where to save the enhancer file (None: not saved).
    model, weights, layers : the frozen network the realism loss runs on
        (:func:`~fakesegment_nb.weights.load_backbone`) and its training layers (default
        :data:`DEFAULT_LAYERS` for ``efficientnet_lite0``, every layer for other models).
    steps : optimisation steps, each on ``batch_size`` synthetic images (crops).
    crop : train on random ``crop x crop`` crops at the images' own resolution (default
        :data:`DEFAULT_CROP`; images with a shorter side under ``crop`` are enlarged to it), fed to
        the network at that size where its input size can be set (EfficientNet-Lites, ``timm:``);
        None or 0 (the default): whole images resized to the network's input size.
    seed : fixes the initialisation, the batches, the augmentations and the grain: the same
        seed and data give the same state dict on the CPU.
    lr, tone_lr, grain_lr : Adam's learning rate for the convolutions, ``lr * tone_lr`` for the
        tone curve and colour matrix, ``lr * grain_lr`` for the grain (its levels are learned in
        log space from near zero: at ``lr`` alone, 150 steps cannot reach a camera's shot noise).
    content_weight, content_pool : weight of the content term and its averaging window.
    paired_weight : weight of FeatureRealismLoss's paired term for synthetic images with a real
        twin of the same stem (0: statistics matching only).
    width, depth : the enhancer's residual stack.
    max_real : the real side of the statistics is accumulated once over up to this many real
        images (augmented as in training), not drawn per step; with crops, over
        ``min(max_real, max(n_real, 64))`` crops (each real image at least once).
    momentum : running average of the synthetic side's moments over batches
        (:func:`unpaired_terms`; 0: this batch's alone).
    """
    if not 0 <= momentum < 1:
        raise ParameterError("momentum", f"must lie in [0, 1), got {momentum}")
    from tqdm.auto import tqdm

    from ..loss import FeatureRealismLoss
    from ..weights import load_backbone

    if int(steps) != steps or steps < 1:
        raise ParameterError("steps", f"must be a whole number of at least 1, got {steps}")
    if batch_size < 1:
        raise ParameterError("batch_size", f"must be at least 1, got {batch_size}")
    for name, v in (("content_weight", content_weight), ("paired_weight", paired_weight)):
        if not v >= 0:
            raise ParameterError(name, f"must be >= 0, got {v}")
    for name, v in (("lr", lr), ("tone_lr", tone_lr), ("grain_lr", grain_lr)):
        if not v > 0:
            raise ParameterError(name, f"must be > 0, got {v}")
    if content_pool < 1:
        raise ParameterError("content_pool", f"must be >= 1, got {content_pool}")
    crop = int(crop) if crop else None
    if crop is not None and crop < 32:
        raise ParameterError("crop", f"must be at least 32 pixels (or 0 for whole images), got {crop}")
    t0 = time.perf_counter()
    notes: list[str] = []
    real_e = _readable(scan_folder(real, "real"), "real", notes)
    syn_e = _readable(scan_folder(synthetic, "synthetic"), "synthetic", notes)
    layers = list(layers) if layers else list(TRAIN_LAYERS.get(model, ())) or None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from ..backbones import input_size_applies

        sized = crop is not None and input_size_applies(model)
        backbone, info = load_backbone(model, weights, layers, device, (crop, crop) if sized else None)
    for w in caught:
        notes.append(str(w.message))
    if not info.trained:
        notes.append(f"the realism loss runs on untrained weights ({info.label}): the enhancer learns "
                     "nothing a trained network would call realistic")
    layers = list(backbone.layers)
    size = int(backbone.input_size[0])
    twins = paired_keys(real_e, syn_e) if paired_weight > 0 else {}
    transform = training_transform(size, crop=crop)
    syn_ds = ImageFiles(syn_e, transform, [twins.get(e.path) for e in syn_e] if twins else None)
    if twins and len(twins) < len(syn_e):
        syn_e = [e for e in syn_e if e.path in twins]  # the paired term needs every batch paired
        syn_ds = ImageFiles(syn_e, transform, [twins[e.path] for e in syn_e])
        notes.append(f"paired term: training on the {len(syn_e)} synthetic images with a real twin")
    real_ds = ImageFiles(real_e, transform)

    with _deterministic(device):
        torch.manual_seed(seed)
        enhancer = Enhancer(width=width, depth=depth).to(device)
        realism = FeatureRealismLoss(backbone, layers=layers, mode="unpaired")
        paired = FeatureRealismLoss(backbone, layers=layers, mode="paired") if twins else None
        syn_loader = infinite_loader(syn_ds, batch_size, int(steps), seed * 2 + 1)
        n_moments = min(int(max_real), max(len(real_ds), 64)) if crop else min(int(max_real), len(real_ds))
        bank = real_moments(realism, real_ds, max_real, seed * 2 + 2, device, progress, samples=n_moments)
        grain = torch.Generator(device="cpu")
        grain.manual_seed(int(seed))
        tone, grain_p = enhancer.tone_parameters(), enhancer.grain_parameters()
        own = {id(p) for p in tone + grain_p}
        opt = torch.optim.Adam([{"params": tone, "lr": lr * tone_lr}, {"params": grain_p, "lr": lr * grain_lr},
                                {"params": [p for p in enhancer.parameters() if id(p) not in own], "lr": lr}])
        history: list[dict] = []
        layer_weights: dict[str, float] = {}
        running: dict = {}
        bar = tqdm(total=int(steps), desc="enhance train", unit="step", disable=not progress, file=sys.stderr)
        try:
            for step, sb in enumerate(syn_loader):
                syn, twin = (sb[0], sb[1]) if twins else (sb, None)
                syn = syn.to(device)
                if step == 0:  # every layer's gap starts at 1
                    with torch.no_grad():
                        for l, g in unpaired_terms(realism, syn, bank).items():
                            layer_weights[l] = 1.0 / float(g) if g > 0 else 1.0
                noise = torch.randn(syn.shape, generator=grain).to(device)
                enhanced = enhancer(syn, noise=noise)
                terms = unpaired_terms(realism, enhanced, bank, running, momentum)
                r = sum(layer_weights[l] * t for l, t in terms.items())
                p = paired(enhanced, twin.to(device)) if paired is not None else torch.zeros(())
                c = F.l1_loss(F.avg_pool2d(enhanced, content_pool), F.avg_pool2d(syn, content_pool))
                total = r + paired_weight * p + content_weight * c
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                history.append({"step": step + 1, "total": float(total.detach()), "realism": float(r.detach()),
                                "paired": float(p.detach()), "content": float(c.detach())})
                bar.set_postfix(loss=f"{history[-1]['total']:.4f}", realism=f"{history[-1]['realism']:.4f}")
                bar.update()
        finally:
            bar.close()
    enhancer.eval()
    seconds = time.perf_counter() - t0
    meta = {"model": backbone.name, "weights": info.label, "weights_trained": bool(info.trained),
            "layers": layers, "input_size": size, "crop": crop,
            "loss": {"realism": "FeatureRealismLoss unpaired (statistics matching) against the moments of "
                                "all real training images", "layer_weights": layer_weights,
                     "real_images_in_moments": min(len(real_e), int(max_real)),
                     "real_samples_in_moments": n_moments, "momentum": float(momentum),
                     "paired_weight": float(paired_weight), "content": "L1 of avg_pool(k) images",
                     "content_weight": float(content_weight), "content_pool": int(content_pool)},
            "optimizer": {"name": "Adam", "lr": float(lr), "tone_lr": float(tone_lr), "grain_lr": float(grain_lr),
                          "batch_size": int(batch_size)},
            "steps": int(steps), "seed": int(seed), "enhancer": dict(enhancer.config),
            "real": str(real), "synthetic": str(synthetic), "n_real": len(real_e), "n_synthetic": len(syn_e),
            "n_pairs": len(twins), "final_loss": history[-1]["total"] if history else None,
            "train_seconds": round(seconds, 1), "fakesegment_nb": __version__, "torch": str(torch.__version__)}
    res = TrainResult(enhancer.cpu(), meta, history, None, seconds, notes)
    if out is not None:
        res.path = save_enhancer(res.enhancer, out, meta)
    return res
