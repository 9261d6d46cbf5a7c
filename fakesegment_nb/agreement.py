"""Do several networks tell the same story about the same images? (the seed paper's check "across
multiple CNN architectures", so that a finding is about the images, not about one network).

:func:`network_agreement` reads the statistics of stores extracted from the same images with
different networks and compares, between every two *trained* networks:

* the per-image ranking: Spearman's rank correlation (:func:`scipy.stats.spearmanr`) of the fused
  per-image realism scores (``images.csv``, layer ``fused``) over the synthetic images both hold
  (matched by content, sha256), with its p-value;
* the gap profile: where in each network the gap (``fid_ratio`` by default) peaks, by layer name
  and relative depth (0 = the first stored layer, 1 = the last), and, for networks with the same
  number of layers, Spearman's correlation of the two profiles by depth.

Untrained stores (random weights) are left out of the comparison and named as smoke tests: a
random network has learned nothing about real images. The result carries one sentence, computed
from these figures, that says whether the trained networks agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from .errors import FakesegmentError, ParameterError
from .stats import FUSED, compare_stores, image_scores, numbered
from .store import as_tree, image_table

__all__ = ["NetworkAgreement", "network_agreement", "agreement_sentence", "network_labels", "ALPHA"]

ALPHA = 0.05  # a rank correlation counts as shown when its p-value is below this


@dataclass(frozen=True)
class NetworkAgreement:
    """What :func:`network_agreement` found.

    Attributes
    ----------
    trained : labels of the trained stores compared.
    smoke : labels of the untrained stores left out (smoke tests).
    images : one row per pair of trained stores: ``a, b, rho, p, n`` (Spearman's rho of the
        fused per-image scores over ``n`` shared synthetic images, and its p-value).
    layers : one row per trained store: ``label, peak, relative_depth, value`` (the layer where
        ``field`` is largest) and ``profile`` (``field`` per layer, in network order).
    profiles : one row per pair of trained stores with the same number of layers: ``a, b, rho``
        (Spearman's rho of their ``field`` profiles by depth).
    field : the gap field the profiles compare.
    sentence : whether the trained networks agree, in words, from the figures above.
    """

    trained: list[str]
    smoke: list[str]
    images: pd.DataFrame
    layers: pd.DataFrame
    profiles: pd.DataFrame
    field: str
    sentence: str


def network_labels(trees) -> list[str]:
    """``"model (weights)"`` per store, numbered (``#1``, ``#2``) where repeated."""
    return numbered([f"{t.attrs.get('model', '?')} ({t.attrs.get('weights', '?')})" for t in trees])


def _short(label: str) -> str:
    return label.split(" (", 1)[0]


def _scores(tree, set_name: str | None = None) -> pd.Series:
    """Fused per-image scores of the synthetic images (of ``set_name``), indexed by content (sha256)."""
    s = image_scores(tree, FUSED, set_name=set_name).set_index("image")["score"]
    sha = image_table(tree)["sha256"]
    s = s[s.index.isin(sha.index)]
    s.index = sha.loc[s.index].to_numpy()
    return s[~s.index.duplicated()]


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return np.nan, np.nan
    res = spearmanr(a[ok], b[ok])
    return float(res.statistic), float(res.pvalue)


def agreement_sentence(trained, smoke, images, layers, profiles, field) -> str:
    """Whether the ``trained`` networks agree, in words, from :class:`NetworkAgreement`'s tables:
    they agree when every pair's per-image rank correlation is positive with p < :data:`ALPHA`,
    lean the same way when every one is positive, and do not agree otherwise; then where the gap
    peaks, and the ``smoke`` (untrained) stores left out."""
    names = [_short(l) for l in trained]
    tail = ""
    if smoke:
        tail = (f" {', '.join(_short(s) for s in smoke)} with random weights is a smoke test, not a second "
                "opinion: it is left out of this comparison.")
    if len(trained) < 2:
        only = f"Only one trained network ({names[0]})" if trained else "No trained network"
        return f"{only}: nothing to compare across architectures.{tail}"
    rho, p = images["rho"].to_numpy(float), images["p"].to_numpy(float)
    n = int(images["n"].min())
    if not np.isfinite(rho).any():
        verdict = "The per-image scores cannot be compared (fewer than 3 shared synthetic images with scores)."
    else:
        lo, hi = np.nanmin(rho), np.nanmax(rho)
        span = f"{lo:.2f}" if lo == hi else f"{lo:.2f} to {hi:.2f}"
        ps = f"every p < {ALPHA:g}" if (p < ALPHA).all() else f"largest p {np.nanmax(p):.2g}"
        which = "both" if len(trained) == 2 else f"all {len(trained)}"
        if (rho > 0).all() and (p < ALPHA).all():
            verdict = (f"The trained networks agree on which synthetic images look least real: Spearman's rho of "
                       f"their fused per-image scores is {span} ({n} images, {ps}; {which} networks).")
        elif (rho > 0).all():
            verdict = (f"The trained networks lean the same way on which synthetic images look least real "
                       f"(Spearman's rho {span}), but with {n} images not every correlation is significant ({ps}).")
        else:
            verdict = (f"The trained networks do not agree on which synthetic images look least real: Spearman's "
                       f"rho of their fused per-image scores is {span} ({n} images, {ps}).")
    peaks = [f"{r.peak} of {_short(r.label)} (depth {r.relative_depth:.2f})" for r in layers.itertuples()]
    same_peak = layers["relative_depth"].nunique() == 1
    gap = (f" The gap ({field}) peaks at the same depth in every network: " if same_peak
           else f" The gap ({field}) peaks at different depths: ") + ", ".join(peaks) + "."
    if len(profiles) and np.isfinite(profiles["rho"]).any():
        r = profiles["rho"].to_numpy(float)
        same = np.isclose(r, 1.0).all()
        gap += (" Every network orders its layers the same way by it." if same else
                f" Their layer profiles correlate with Spearman's rho {np.nanmin(r):.2f} to {np.nanmax(r):.2f}.")
    return verdict + gap + tail


def network_agreement(stores, labels=None, field: str = "fid_ratio", cache: bool = True) -> NetworkAgreement:
    """Compare the trained networks among ``stores`` (same images, different networks).

    Parameters
    ----------
    stores : store paths / URLs or opened DataTrees, each with statistics (``fakesegment stats``)
        or computable ones.
    labels : one name per store (default ``"model (weights)"``, numbered where repeated).
    field : the gap field whose profile is compared: ``fid_ratio`` (default; continuous, where
        ``c2st_auroc`` saturates at 1 for a plain gap), ``c2st_auroc``, ``fid`` ...
    cache : use each store's statistics cache when it is up to date.

    A store of several synthetic sets takes part with its first set (store order); the sentence
    says so.

    Returns
    -------
    NetworkAgreement
    """
    trees = [as_tree(s) for s in stores]
    labels = network_labels(trees) if labels is None else list(labels)
    table = compare_stores(trees, labels=labels, cache=cache)
    first: dict = {}
    for line in table.attrs["lines"]:
        first.setdefault(line["store"], line)
    line_of = {lab: first[lab]["line"] for lab in labels}
    set_of = {lab: first[lab]["set"] for lab in labels}
    several = [(lab, [l["set"] for l in table.attrs["lines"] if l["store"] == lab]) for lab in labels]
    sets_note = " ".join(f"{_short(lab)} holds the sets {', '.join(ss)}: its first, {ss[0]}, is compared."
                         for lab, ss in several if len(ss) > 1)
    if field not in table[line_of[labels[0]]].columns:
        raise ParameterError("field", f"{field!r} is not a gap-profile field; choose from "
                             f"{', '.join(c for c in table[line_of[labels[0]]].columns if c != 'layer')}")
    trained = [l for l, t in zip(labels, trees) if t.attrs.get("weights_trained")]
    smoke = [l for l in labels if l not in trained]
    tree_of = dict(zip(labels, trees))
    rows = []
    for lab in trained:
        df = table[line_of[lab]].dropna(subset=["layer"])
        v = df[field].to_numpy(float)
        if not np.isfinite(v).any():
            raise FakesegmentError(f"{lab}: no finite {field} in its gap profile (see the gap table's notes)")
        i = int(np.nanargmax(v))
        rows.append({"label": lab, "peak": str(df["layer"].iloc[i]), "value": float(v[i]), "profile": v,
                     "relative_depth": float(df["relative_depth"].iloc[i])})
    layers = pd.DataFrame(rows, columns=["label", "peak", "relative_depth", "value", "profile"])
    scores = {lab: _scores(tree_of[lab], set_of[lab]) for lab in trained}
    pairs, prof = [], []
    for a, b in combinations(trained, 2):
        common = scores[a].index.intersection(scores[b].index)
        rho, p = _spearman(scores[a][common].to_numpy(float), scores[b][common].to_numpy(float))
        pairs.append({"a": a, "b": b, "rho": rho, "p": p, "n": len(common)})
        pa, pb = (layers.set_index("label").loc[x, "profile"] for x in (a, b))
        if len(pa) == len(pb):
            prof.append({"a": a, "b": b, "rho": _spearman(pa, pb)[0]})
    images = pd.DataFrame(pairs, columns=["a", "b", "rho", "p", "n"])
    profiles = pd.DataFrame(prof, columns=["a", "b", "rho"])
    sentence = agreement_sentence(trained, smoke, images, layers, profiles, field)
    return NetworkAgreement(trained, smoke, images, layers, profiles, field,
                            sentence + (" " + sets_note if sets_note else ""))
