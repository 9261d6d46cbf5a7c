"""Close the gap: an enhancer trained with the feature-space realism loss, and its measurement.

* :mod:`.network`: :class:`Enhancer` (tone curve + shallow residual convolutions with grain) and
  its file format (:func:`save_enhancer`, :func:`load_enhancer`);
* :mod:`.data`: folders as torch Datasets, torchvision augmentation, held-out splits by scene;
* :mod:`.train`: :func:`train_enhancer` (``fakesegment enhance train``);
* :mod:`.apply`: :func:`apply_enhancer` (``fakesegment enhance apply``);
* :mod:`.measure`: :func:`gap_table` (two sets of one store, or two stores), :func:`content_ssim` and
  :func:`map_change`, on held-out images.
"""

from .apply import ApplyResult, apply_enhancer, enhance_array
from .data import HoldoutSplit, holdout_split
from .measure import content_ssim, gap_table, map_change
from .network import FORMAT, Enhancer, exposure_key, load_enhancer, save_enhancer, working_resize, working_size
from .train import (DEFAULT_CONTENT_WEIGHT, DEFAULT_CROP, DEFAULT_LAYERS, DEFAULT_MODEL, DEFAULT_STEPS, TrainResult,
                    train_enhancer)

__all__ = ["Enhancer", "FORMAT", "exposure_key", "load_enhancer", "save_enhancer", "working_size", "working_resize", "train_enhancer", "TrainResult",
           "DEFAULT_MODEL", "DEFAULT_LAYERS", "DEFAULT_STEPS", "DEFAULT_CROP", "DEFAULT_CONTENT_WEIGHT",
           "apply_enhancer", "enhance_array",
           "ApplyResult", "holdout_split", "HoldoutSplit", "gap_table", "content_ssim", "map_change"]
