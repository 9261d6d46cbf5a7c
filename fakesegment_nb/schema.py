"""The store's image table, as both its writer and its readers name it (DESIGN.md section 3).

Names and small helpers only, on numpy and pandas: extraction writes a store without loading
xarray (:mod:`fakesegment_nb.store`, which reads stores through xarray, re-exports them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["ROOT_VARS", "STRING_VARS", "COMMITTED", "LEGACY_SET", "as_strings", "set_column", "image_rows"]

ROOT_VARS = ("domain", "set", "path", "pair", "height", "width", "sha256")
STRING_VARS = ("image", "domain", "set", "path", "pair", "sha256")
COMMITTED = "images_committed"  # root attribute: rows that count as stored
# The set of every synthetic image of a store written before sets existed (they have no ``set``
# variable): such a store reads as one set of this name.
LEGACY_SET = "synthetic"


def as_strings(values) -> np.ndarray:
    """Any zarr/numpy string array (StringDType included) as an object array of str."""
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)


def set_column(domains, sets=None) -> np.ndarray:
    """The ``set`` of each row (object array of str) from its ``domain`` and stored ``set``
    (None where the store has no ``set`` variable): ``""`` for real images, the stored name for
    synthetic ones, :data:`LEGACY_SET` where a synthetic image has none (stores from before sets,
    or rows the writer gave no set)."""
    domains = np.asarray(domains, dtype=object)
    out = np.full(len(domains), "", dtype=object) if sets is None else as_strings(sets)
    syn = domains == "synthetic"
    out[syn & (out == "")] = LEGACY_SET
    out[~syn] = ""
    return out


def image_rows(entries, sizes) -> pd.DataFrame:
    """The root rows of a commit (:meth:`StoreWriter.commit`): one per image, columns ``image``
    and :data:`ROOT_VARS`, from entries with ``image, domain, set, path, pair, sha256`` attributes
    (:class:`fakesegment_nb.manifest.Entry`) and their decoded ``(height, width)``."""
    return pd.DataFrame({"image": [e.image for e in entries], "domain": [e.domain for e in entries],
                         "set": [e.set for e in entries],
                         "path": [e.path for e in entries], "pair": [e.pair for e in entries],
                         "height": [s[0] for s in sizes], "width": [s[1] for s in sizes],
                         "sha256": [e.sha256 for e in entries]})
