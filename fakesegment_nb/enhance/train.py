"""Training the enhancer with the feature-space realism loss.

The objective, for a batch of synthetic images ``s``, enhanced ``e = E(s)``, and a batch of
real images ``r`` (not the same scenes; DESIGN.md section 2)::

    L = sum_l  w_l * unpaired_l(e, r)                  FeatureRealismLoss, statistics matching
      + paired_weight * paired(e, twin(s))             where s has a real twin (same stem)
      + content_weight * | pool_k(e) - pool_k(T(s)) |_1  the content term

``unpaired_l`` is FeatureRealismLoss's statistics-matching term with the real side's moments
accumulated once over all real training images (up to ``max_real``): drawing 4 real scenes per
step made the term mostly scene-sampling noise (the real side alone varied by 20-40% between
batches on the tuning probe, about as much as all the grain in the gap).
``w_l`` = 1 / ``unpaired_l`` of the first batch before any training, so every training layer
starts at 1 whatever the scale of its features. The content term compares ``k x k``-averaged
images: the enhancer may change grain, sharpness and colour, not the scene. ``T(s)`` is the input
after the enhancer's own global tone curve and colour matrix (``tone_content=0``, the default): those
move levels and colours and cannot draw, so only the local steps are held to the image
(:func:`content_loss`; ``tone_content=None`` compares with ``s`` itself, as before). With ``adversarial > 0``
a term ``adversarial * generator_loss(D(e))`` is added, ``D`` a patch discriminator on the frozen
features (:mod:`.discriminator`) trained at every step on a batch of real images against ``e``.
The enhancer kept is the exponential moving average of its weights over the steps (``ema``,
:func:`ema_decay`), not the last step's: the last state is partly luck.
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

from .data import DECODE_CACHE_BYTES, ImageFiles, infinite_loader, paired_keys, training_transform
from .discriminator import PatchDiscriminator, discriminator_loss, generator_loss
from .network import Enhancer, exposure_key, save_enhancer

__all__ = ["train_enhancer", "TrainResult", "DEFAULT_MODEL", "DEFAULT_LAYERS", "DEFAULT_STEPS", "DEFAULT_CROP",
           "DEFAULT_CONTENT_WEIGHT", "DEFAULT_TONE_CONTENT", "DEFAULT_EMA", "DEFAULT_EXPOSURE", "ema_decay", "DEFAULT_NATIVE",
           "DEFAULT_BALANCE", "BALANCES",
           "batch_features", "content_term", "content_loss", "unpaired_terms", "unpaired_parts"]

DEFAULT_MODEL = "efficientnet_lite0"
# every stage the gap is measured in (issue 20 asks for every layer; docs/loss.md). No layer is then
# an independent check; give layers=("p3", "p4") (the earlier default) to keep p2 and p5 as one.
DEFAULT_LAYERS = ("p2", "p3", "p4", "p5")
# training layers when none are given: these for the models named, every layer otherwise
TRAIN_LAYERS = {DEFAULT_MODEL: DEFAULT_LAYERS}
# 600: with the weights' average (DEFAULT_EMA) longer training no longer fits the training renders
# at the held-out ones' cost. On the four held-out photoreal rows of the warehouse (splits 1 and 2,
# enhancer seeds 0 and 1) p2 fell by 47.4% on average against 42.4% at 300 steps, p3 49.0 against
# 43.3%, p4 37.7 against 35.4%; content SSIM 0.74 against 0.80; docs/loss.md, "Twelfth round" (which
# also has its cost: split 1's randomised renders move further away at p2). Training on 15 renders of
# 1 MP took 276 s here (issue 20: <= 10 minutes; 330-352 s on another day, with the bicubic resize of the
# fourteenth round), and on the probe 273 s (issue 13: <= 300 s).
DEFAULT_STEPS = 600
# None: whole images resized to the network's input size, the scale at which the gap is measured.
# crop=224 (random crops at the images' own resolution, fed to the network at that size) is an
# option: on the warehouse tuning split (seed 0) it left p2 further from the photos (+3% to +8%
# with content weight 10 or 30, fed at 224 or 320), where whole images moved every layer closer
# (docs/loss.md, "Genuine renders").
DEFAULT_CROP = None
DEFAULT_CONTENT_WEIGHT = 10.0
# False: the synthetic images are resized to the network's input size before the enhancer sees them.
# True: the enhancer works on whole images at their own resolution and the network's preprocessing
# resizes its output, as after `enhance apply` and extraction (docs/loss.md, "Genuine renders").
DEFAULT_NATIVE = False
# "layer": each training layer's term starts at 1; "term": its mean part and its covariance part each do.
# Default "term" with the mean part weighted 4 ("b4", docs/loss.md "Genuine renders"): on the warehouse
# splits not tuned on (1 and 2) it moved every layer of the photoreal views closer than "layer" did at
# p2 and p3 (split 1 -34.4/-25.2% against -5.2/-16.9%, split 2 -28.6/-23.5% against -8.2/-16.8%), and
# its worst layer anywhere was +0.2% (randomised split 1, p3; -0.7% when re-run at stop 27, docs/loss.md
# fifth round) against +4.1% (p5); on the probe it
# still cuts every layer's held-out FID by 34-75%, less than "layer" did (38-78%). Those photoreal
# figures were applied at full resolution and no longer reproduce; applied at the trained scale
# (Enhancer.at_scale, docs/loss.md sixth round): split 1 -25.9/-34.7%, split 2 -34.2/-40.1% at p2/p3
# (150 steps, the default then; the seventh round has DEFAULT_STEPS' figures).
BALANCES = ("layer", "term")
DEFAULT_BALANCE = "term"
DEFAULT_MEAN_WEIGHT = 4.0
# 0: the content term holds the local steps (residual, grain) to the toned image and leaves the global
# tone curve and colour matrix free (they move levels and colours, they cannot draw). None: the whole
# output against the input (the earlier default). On the four held-out photoreal rows of the warehouse
# (splits 1 and 2, enhancer seeds 0 and 1) p2 fell by 39.6% on average against 31.4% (range 33-43%
# against 19-38%), p3 42.3 against 40.5%, p4 35.9 against 38.8%; docs/loss.md, "Ninth round".
DEFAULT_TONE_CONTENT = 0.0
# The enhancer kept is the moving average of its weights (decay 0.98, a horizon of about 50 steps)
# rather than the last step's: the p2 mean term wanders between one 50-step check and the next. On
# the four held-out photoreal rows of the warehouse p2 fell by 42.4% on average against 39.6% (range
# 40-45% against 33-43%), p3 43.3 against 42.3%, p4 35.4 against 35.9%; held-out probes 57-83% in
# p2-p4 against 55-72%; docs/loss.md, "Eleventh round".
DEFAULT_EMA = 0.98
# False: the tone curve sees each render as it is. True brings every render to the training renders' key
# (log-average luminance) first, so one curve serves renders lit darker or brighter than the ones it was
# trained on: on the warehouse's randomised renders of split 1 (lit at random) p2 went from +8.6% (away
# from the photos) to -21.9%, but on the four held-out photoreal rows it tied (p2 -48.4% against -48.0%,
# p3 -50.8 against -51.3%, p5 -17.7 against -18.9%) and on split 2's randomised renders p2 closed 3.5
# points less; docs/loss.md, "Fifteenth round". An option, not the default.
DEFAULT_EXPOSURE = False


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


def batch_features(realism, images) -> dict[str, torch.Tensor]:
    """``realism.features`` of a batch: a ``(B, 3, H, W)`` tensor, or a list of ``(3, H, W)``
    images of different sizes (whole images at their own resolution), each resized to the network's
    input by its own differentiable preprocessing and run as one batch."""
    if isinstance(images, torch.Tensor):
        return realism.features(images)
    bb = realism.backbone
    feats = bb.features(torch.cat([bb.preprocess_float(x[None]) for x in images]))
    return {l: feats[l] for l in realism.layers}


def unpaired_terms(realism, synthetic, bank, running: dict | None = None,
                   momentum: float = 0.0) -> dict[str, torch.Tensor]:
    """Per layer, ``FeatureRealismLoss``'s unpaired term ``mean (mu_s - mu_r)^2 + mean (S_s - S_r)^2``
    of a synthetic batch against the real moments ``bank`` (:func:`real_moments`).

    With ``running`` (a dict, updated in place) and ``momentum`` in (0, 1), the synthetic moments
    are ``momentum * running + (1 - momentum) * batch``, the running part without gradient: the
    gap is then estimated from many batches while the gradient still flows through this batch's
    images (a batch of a few scenes alone mostly measures which scenes it drew).
    """
    return {l: m + c for l, (m, c) in unpaired_parts(realism, synthetic, bank, running, momentum).items()}


def unpaired_parts(realism, synthetic, bank, running: dict | None = None,
                   momentum: float = 0.0, feats: dict | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """:func:`unpaired_terms` in its two parts: per layer ``(mean_c (mu_s - mu_r)^2,
    mean_cc' (S_s - S_r)^2)``. ``feats``: the synthetic batch's :func:`batch_features`, where the
    caller has them already."""
    from ..loss import feature_moments

    out = {}
    for l, f in (feats if feats is not None else batch_features(realism, synthetic)).items():
        ms, cs = feature_moments(f)
        if running is not None and momentum > 0:
            if l in running:
                rm, rc = running[l]
                ms, cs = momentum * rm + (1 - momentum) * ms, momentum * rc + (1 - momentum) * cs
            running[l] = (ms.detach(), cs.detach())
        mr, cr = bank[l]
        out[l] = (((ms - mr) ** 2).mean(), ((cs - cr) ** 2).mean())
    return out


def _part_weights(parts: dict, balance: str, mean_weight: float) -> dict[str, tuple[float, float]]:
    """Per layer, the weights of the mean and the covariance part from their values before training:
    ``balance="layer"``: both ``1 / (mean + cov)`` (each layer's term starts at 1);
    ``balance="term"``: ``1 / mean`` and ``1 / cov`` (each part starts at 1, so the mean, FID's first
    term and the part that generalises across scenes, is not drowned by the covariance). The mean
    part's weight is then multiplied by ``mean_weight``."""
    out = {}
    for l, (m, c) in parts.items():
        m, c = float(m), float(c)
        if balance == "term":
            wm, wc = (1.0 / m if m > 0 else 1.0), (1.0 / c if c > 0 else 1.0)
        else:
            wm = wc = 1.0 / (m + c) if m + c > 0 else 1.0
        out[l] = (wm * float(mean_weight), wc)
    return out


def content_term(enhanced, synthetic, pool: int) -> torch.Tensor:
    """``| avg_pool(pool)(E(s)) - avg_pool(pool)(s) |_1``, averaged over pixels; for lists of images
    of different sizes, each image's mean, averaged over images."""
    if isinstance(enhanced, torch.Tensor):
        return F.l1_loss(F.avg_pool2d(enhanced, pool), F.avg_pool2d(synthetic, pool))
    return torch.stack([F.l1_loss(F.avg_pool2d(e[None], pool), F.avg_pool2d(x[None], pool))
                        for e, x in zip(enhanced, synthetic)]).mean()


def content_loss(enhancer: Enhancer, enhanced, synthetic, pool: int, tone_weight: float | None = None) -> torch.Tensor:
    """The content term of training. ``tone_weight`` None: :func:`content_term` of the enhanced
    images against their inputs (the enhancer's every step at once). A number: the local steps
    (residual and grain) against the toned input, plus ``tone_weight`` times the global tone against
    the input; 0 leaves the tone curve and colour matrix free (they can move colours and levels, not
    draw anything)."""
    if tone_weight is None:
        return content_term(enhanced, synthetic, pool)
    toned = ([enhancer.tone(x[None])[0] for x in synthetic] if isinstance(synthetic, list)
             else enhancer.tone(synthetic))
    local = content_term(enhanced, toned, pool)
    return local + float(tone_weight) * content_term(toned, synthetic, pool) if tone_weight else local


def ema_decay(ema: float, steps: int) -> float:
    """The decay the moving average of a ``steps``-step run uses: ``ema``, lowered where needed so
    that the state the run starts from keeps at most 1% of the weight (300 or 600 steps: 0.98 stays
    0.98; 20 steps: 0.785; 1 step: 0, the last state)."""
    return min(float(ema), 0.01 ** (1.0 / (steps - 1))) if steps > 1 else 0.0


@contextlib.contextmanager
def _deterministic(device: str = "cpu"):
    """Deterministic algorithms on the CPU (same seed and data, same state dict). On CUDA they are
    left as they are: with them on, torch refuses kernels that have no deterministic CUDA version
    (the backward of the network's bilinear resize among them) and cuBLAS wants
    CUBLAS_WORKSPACE_CONFIG set, so ``--device cuda`` would stop with a RuntimeError (torch's
    documented behaviour; no GPU was at hand to run it). A GPU run is reproducible only up to
    float summation order.

    torch's deterministic mode also fills every newly allocated tensor with NaN
    (``torch.utils.deterministic.fill_uninitialized_memory``), a guard against kernels that read
    memory they did not write; none of training's does (same state dict with and without it), and
    the fill took 28% of a training step's CPU time on the probe, so it is off here."""
    if not str(device).startswith("cpu"):
        yield
        return
    import torch.utils.deterministic as det

    before, fill = torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        det.fill_uninitialized_memory = fill


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


def renders_key(dataset) -> float:
    """The key the renders of ``dataset`` are brought to: the geometric mean of their
    :func:`~.network.exposure_key` (each image as training draws it)."""
    keys = []
    with torch.no_grad():
        for i in range(len(dataset)):
            x = dataset[i]
            keys.append(exposure_key((x[0] if isinstance(x, tuple) else x)[None]))
    return float(torch.cat(keys).log().mean().exp())


def train_enhancer(real, synthetic, out=None, *, model: str = DEFAULT_MODEL, weights: str = "auto",
                   layers: Sequence[str] | None = None, steps: int = DEFAULT_STEPS,
                   batch_size: int = 4, seed: int = 0, device: str = "cpu", lr: float = 2e-3, tone_lr: float = 1.0,
                   grain_lr: float = 50.0,
                   content_weight: float = DEFAULT_CONTENT_WEIGHT, content_pool: int = 4,
                   paired_weight: float = 0.0, width: int = 8, depth: int = 3, max_real: int = 256,
                   momentum: float = 0.5, crop: int | None = DEFAULT_CROP, native: bool = DEFAULT_NATIVE,
                   balance: str = DEFAULT_BALANCE, mean_weight: float = DEFAULT_MEAN_WEIGHT,
                   adversarial: float = 0.0, tone_content: float | None = DEFAULT_TONE_CONTENT,
                   ema: float = DEFAULT_EMA, exposure: bool = DEFAULT_EXPOSURE,
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
    native : (without ``crop``) enhance whole synthetic images at their own resolution and resize the
        enhanced images to the network's input with its own differentiable preprocessing: training
        then sees what ``enhance apply`` + extraction produce (grain and detail at the pixel scale
        they are applied at). False (default :data:`DEFAULT_NATIVE`): resized first, enhanced at the
        network's input size. The real images are resized to the input size either way.
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
    balance, mean_weight : how the mean and covariance parts of each layer's term are weighted
        (:func:`_part_weights`): ``"layer"``, each layer starts at 1; ``"term"`` (default
        :data:`DEFAULT_BALANCE`), each part starts at 1; ``mean_weight`` (default
        :data:`DEFAULT_MEAN_WEIGHT`) multiplies the mean part.
    momentum : running average of the synthetic side's moments over batches
        (:func:`unpaired_terms`; 0: this batch's alone).
    adversarial : weight of the adversarial term (0, the default: none). Above 0, a
        :class:`~.discriminator.PatchDiscriminator` on the training layers' features (each image's
        instance-normalised: local detail, not overall tone) learns, one step
        per enhancer step, to tell a batch of real images from the enhanced batch, and the enhancer is
        pushed to make its patches look real to it (docs/loss.md, "Fifth round").
    tone_content : how the content term treats the global tone (:func:`content_loss`): 0 (default
        :data:`DEFAULT_TONE_CONTENT`), free: only the local steps are held to the toned image; a
        weight w > 0 also charges w times the tone's own change; None, the whole output against the
        input (the earlier default).
    ema : decay of the moving average of the weights that is kept instead of the last step's
        (default :data:`DEFAULT_EMA`; 0: the last state), lowered for short runs (:func:`ema_decay`).
    exposure : bring every image to the training renders' key (:func:`renders_key`) before the tone
        curve (default :data:`DEFAULT_EXPOSURE`; False: the curve sees each render as it is).
    """
    if balance not in BALANCES:
        raise ParameterError("balance", f"must be one of {', '.join(BALANCES)}, got {balance!r}")
    if not mean_weight >= 0:
        raise ParameterError("mean_weight", f"must be >= 0, got {mean_weight}")
    if tone_content is not None and not tone_content >= 0:
        raise ParameterError("tone_content", f"must be >= 0 or None, got {tone_content}")
    if not 0 <= momentum < 1:
        raise ParameterError("momentum", f"must lie in [0, 1), got {momentum}")
    from tqdm.auto import tqdm

    from ..loss import FeatureRealismLoss
    from ..weights import load_backbone

    if int(steps) != steps or steps < 1:
        raise ParameterError("steps", f"must be a whole number of at least 1, got {steps}")
    if batch_size < 1:
        raise ParameterError("batch_size", f"must be at least 1, got {batch_size}")
    for name, v in (("content_weight", content_weight), ("paired_weight", paired_weight),
                    ("adversarial", adversarial)):
        if not v >= 0:
            raise ParameterError(name, f"must be >= 0, got {v}")
    for name, v in (("lr", lr), ("tone_lr", tone_lr), ("grain_lr", grain_lr)):
        if not v > 0:
            raise ParameterError(name, f"must be > 0, got {v}")
    if not 0.0 <= ema < 1.0:
        raise ParameterError("ema", f"must lie in [0, 1), got {ema}")
    if content_pool < 1:
        raise ParameterError("content_pool", f"must be >= 1, got {content_pool}")
    crop = int(crop) if crop else None
    native = bool(native) and crop is None
    if native and paired_weight > 0:
        raise ParameterError("paired_weight", "the paired term compares images of one size: with paired_weight > 0 "
                             "give native=False (whole images resized to the network's input) or crop=")
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
    transform = training_transform(size, crop=crop, resize=backbone.resize)
    syn_transform = training_transform(size, native=True) if native else transform
    syn_ds = ImageFiles(syn_e, syn_transform, [twins.get(e.path) for e in syn_e] if twins else None)
    if twins and len(twins) < len(syn_e):
        syn_e = [e for e in syn_e if e.path in twins]  # the paired term needs every batch paired
        syn_ds = ImageFiles(syn_e, syn_transform, [twins[e.path] for e in syn_e])
        notes.append(f"paired term: training on the {len(syn_e)} synthetic images with a real twin")
    # the real images are read once, for their moments, unless the discriminator draws them at every step:
    # only then are their decoded copies worth keeping for the whole run
    real_ds = ImageFiles(real_e, transform, cache_bytes=DECODE_CACHE_BYTES if adversarial > 0 else 0)

    with _deterministic(device):
        torch.manual_seed(seed)
        enhancer = Enhancer(width=width, depth=depth, exposure=exposure).to(device)
        if exposure:
            enhancer.exposure_key.fill_(renders_key(syn_ds))
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
        decay = ema_decay(ema, int(steps))
        averaged = (torch.optim.swa_utils.AveragedModel(
            enhancer, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)
            if decay > 0 else None)
        history: list[dict] = []
        layer_weights: dict[str, float] = {}
        part_weights: dict[str, tuple[float, float]] = {}
        running: dict = {}
        disc = d_opt = real_iter = None
        if adversarial > 0:
            disc = PatchDiscriminator({l: int(mu.numel()) for l, (mu, _) in bank.items()}).to(device)
            d_opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
            real_iter = iter(infinite_loader(real_ds, batch_size, int(steps), seed * 2 + 3))
        bar = tqdm(total=int(steps), desc="enhance train", unit="step", disable=not progress, file=sys.stderr)
        try:
            for step, sb in enumerate(syn_loader):
                syn, twin = (sb[0], sb[1]) if twins else (sb, None)
                if isinstance(syn, list):  # whole images of different sizes, one at a time
                    syn = [x.to(device) for x in syn]
                    enhanced = [enhancer(x[None], noise=torch.randn(x[None].shape, generator=grain).to(device))[0]
                                for x in syn]
                else:
                    syn = syn.to(device)
                    enhanced = None
                if step == 0:  # every layer's gap (or every part of it) starts at 1
                    with torch.no_grad():
                        part_weights = _part_weights(unpaired_parts(realism, syn, bank), balance, mean_weight)
                    layer_weights = {l: w[1] for l, w in part_weights.items()}
                if enhanced is None:
                    noise = torch.randn(syn.shape, generator=grain).to(device)
                    enhanced = enhancer(syn, noise=noise)
                feats = batch_features(realism, enhanced)
                parts = unpaired_parts(realism, enhanced, bank, running, momentum, feats=feats)
                r = sum(part_weights[l][0] * m + part_weights[l][1] * cv for l, (m, cv) in parts.items())
                p = paired(enhanced, twin.to(device)) if paired is not None else torch.zeros(())
                c = content_loss(enhancer, enhanced, syn, content_pool, tone_content)
                a = generator_loss(disc(feats)) if disc is not None else torch.zeros(())
                total = r + paired_weight * p + content_weight * c + adversarial * a
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                if averaged is not None:
                    averaged.update_parameters(enhancer)
                d = torch.zeros(())
                if disc is not None:  # the discriminator's step: real patches against this batch's enhanced ones
                    with torch.no_grad():
                        real_feats = realism.features(next(real_iter).to(device))
                    d = discriminator_loss(disc(real_feats), disc({l: f.detach() for l, f in feats.items()}))
                    d_opt.zero_grad(set_to_none=True)
                    d.backward()
                    d_opt.step()
                history.append({"step": step + 1, "total": float(total.detach()), "realism": float(r.detach()),
                                "paired": float(p.detach()), "content": float(c.detach()),
                                "adversarial": float(a.detach()), "discriminator": float(d.detach())})
                bar.set_postfix(loss=f"{history[-1]['total']:.4f}", realism=f"{history[-1]['realism']:.4f}")
                bar.update()
        finally:
            bar.close()
        if averaged is not None:
            enhancer.load_state_dict(averaged.module.state_dict())
    enhancer.eval()
    seconds = time.perf_counter() - t0
    meta = {"model": backbone.name, "weights": info.label, "weights_trained": bool(info.trained),
            "layers": layers, "input_size": size, "resize": backbone.resize, "crop": crop, "native": native,
            "loss": {"realism": "FeatureRealismLoss unpaired (statistics matching) against the moments of "
                                "all real training images", "layer_weights": layer_weights,
                     "mean_weights": {l: w[0] for l, w in part_weights.items()}, "balance": balance,
                     "mean_weight": float(mean_weight),
                     "real_images_in_moments": min(len(real_e), int(max_real)),
                     "real_samples_in_moments": n_moments, "momentum": float(momentum),
                     "paired_weight": float(paired_weight),
                     "content": "L1 of avg_pool(k) images" + ("" if tone_content is None else
                                                              ", the local steps against the toned input"),
                     "content_weight": float(content_weight), "content_pool": int(content_pool),
                     "adversarial": float(adversarial),
                     "tone_content": None if tone_content is None else float(tone_content),
                     "ema": float(ema), "ema_decay": float(decay),
                     "exposure_key": float(enhancer.exposure_key) if exposure else None},
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
