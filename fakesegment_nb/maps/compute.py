"""Computing (and writing) the maps of one method or of all (what ``fakesegment maps`` runs)."""

from __future__ import annotations

import time
from dataclasses import replace

from ..calibration import DEFAULT_FPR
from ..errors import FakesegmentError, ParameterError
from ..store import image_table
from .features import as_tree, image_pairs
from .domain import domain_maps
from .group import Maps, read_maps, write_maps
from .paired import paired_maps
from .reference import reference_maps
from .settings import METHODS

__all__ = ["compute_maps"]


def compute_maps(store, method: str = "all", write: bool = True, fpr: float = DEFAULT_FPR,
                 weights: dict[str, float] | None = None) -> dict[str, Maps]:
    """Compute (and by default write) the maps of one method or of ``"all"``.

    With ``"all"``, ``paired`` is skipped with a note when the store has no pairs, and ``domain``
    when it has too few images of either domain (the note says how many it needs); the notes go
    with the last method computed. To write, pass the store's path or URL.

    Each method's full-resolution ``score`` and ``mask`` are computed a batch of images at a time,
    from its layer maps, as they are written (or when read, with ``write=False``), so memory does
    not grow with them (benchmarks/bench_maps_all.py).

    Returns
    -------
    ``{method: Maps}``.
    """
    if method not in (*METHODS, "all"):
        raise ParameterError("method", f"{method!r} is unknown; choose paired, reference, domain or all")
    tree = as_tree(store)
    out: dict[str, Maps] = {}
    notes = []
    for m in (METHODS if method == "all" else (method,)):
        if m == "paired" and method == "all" and image_pairs(image_table(tree))[0].size == 0:
            notes.append("no synthetic image has a real partner: paired maps skipped")
            continue
        try:
            res = _COMPUTE[m](tree, weights=weights, fpr=fpr)
        except FakesegmentError as exc:
            if isinstance(exc, ParameterError) or not (m == "domain" and method == "all"):
                raise
            notes.append(f"domain maps skipped: {exc}")
            continue
        if write:
            # written a batch at a time (the score and mask at input resolution are ~0.5 GB per
            # 1,000 images); hand back the stored maps, read lazily
            t0 = time.perf_counter()
            path = write_maps(store, res)
            res = replace(res, dataset=read_maps(path, m), seconds=res.seconds + time.perf_counter() - t0)
        out[m] = res
    if out:
        next(reversed(out.values())).notes.extend(notes)
    return out


_COMPUTE = {"paired": paired_maps, "reference": reference_maps, "domain": domain_maps}
