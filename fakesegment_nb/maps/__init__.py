"""Unrealistic-detail maps ("FakeSegment" maps) from the feature store (DESIGN.md section 6).

All three methods are functions of the stored features only (no network, no image files). The
package is split the way anomalib splits PaDiM -- feature access, distribution models, map
generators, calibration -- and this module lists what the rest of the project uses:

:mod:`.features`     reading stored features, the pairs, the real images' per-channel spread;
:mod:`.settings`     per-model choices (layer weights, components, distances), with their measurements;
:mod:`.gaussian`     the shrunk Gaussian and its Mahalanobis distance (``reference``, PaDiM);
:mod:`.memory_bank`  the coreset memory bank and its nearest-patch distance (``reference``, PatchCore);
:mod:`.paired`       the ``paired`` maps and their per-channel terms;
:mod:`.reference`    the ``reference`` maps, cross-fitted over two folds of real images;
:mod:`.domain`       the ``domain`` maps: a cross-fitted linear patch classifier, real against each set;
:mod:`.group`        fusion of layer maps and the ``/maps/<method>`` group (its layout, write, read);
:mod:`.compute`      :func:`compute_maps`, what ``fakesegment maps`` runs;
:mod:`fakesegment_nb.calibration`  the mask thresholds (numpy only; shared with the evaluation).

The fitted state (the paired maps' per-channel spread, the reference Gaussians or memory banks,
the domain classifiers)
is stored in the maps group, so :func:`fakesegment_nb.segments.attribute` reuses it instead of
refitting on every click.
"""

from ..calibration import DEFAULT_FPR, calibrate, robust_z
from .compute import compute_maps
from .domain import DomainFit, domain_maps, fit_domain
from .features import MAX_REAL_FOR_SPREAD, as_tree, content_descriptors, image_pairs, input_size
from .gaussian import Gaussian, fit_gaussian, mahalanobis
from .group import Maps, fuse, read_maps, score_map, stored_methods, upsample, write_maps
from .memory_bank import MemoryBank, fit_memory_bank, greedy_coreset, nearest_patches, neighbourhood_patches
from .paired import paired_maps, paired_terms
from .reference import fold_models, folds, reference_maps, similar_pairs
from .settings import (DOMAIN, DOMAIN_BY_MODEL, MIN_DOMAIN_IMAGES, LAYER_WEIGHTS, MAX_NULL_IMAGES, MEMORY_BANK, MEMORY_BANK_BY_MODEL, METHODS, PAIRED_COMPONENTS,
                       PAIRED_COMPONENTS_BY_MODEL, REFERENCE_CENTRE, REFERENCE_DISTANCE, SHRINKAGE, SSIM_MIN_CELLS,
                       SSIM_SIGMA, domain_params, layer_weights, memory_bank_params, paired_components)

__all__ = ["DEFAULT_FPR", "DOMAIN", "DOMAIN_BY_MODEL", "MIN_DOMAIN_IMAGES", "DomainFit", "LAYER_WEIGHTS", "MAX_NULL_IMAGES", "MAX_REAL_FOR_SPREAD", "MEMORY_BANK",
           "MEMORY_BANK_BY_MODEL", "METHODS", "PAIRED_COMPONENTS", "PAIRED_COMPONENTS_BY_MODEL", "REFERENCE_CENTRE",
           "REFERENCE_DISTANCE", "SHRINKAGE", "SSIM_MIN_CELLS", "SSIM_SIGMA", "Gaussian", "Maps", "MemoryBank",
           "as_tree", "calibrate", "compute_maps", "content_descriptors", "domain_maps", "domain_params", "fit_domain", "fit_gaussian", "fit_memory_bank", "fold_models", "folds", "fuse",
           "greedy_coreset", "image_pairs", "input_size", "layer_weights", "mahalanobis", "memory_bank_params",
           "nearest_patches", "neighbourhood_patches", "paired_components", "paired_maps", "paired_terms",
           "read_maps", "reference_maps", "robust_z", "score_map", "similar_pairs", "stored_methods", "upsample", "write_maps"]
