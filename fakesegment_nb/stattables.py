"""The statistics tables' schema (DESIGN.md section 5; the CSV names and columns are a contract):
their columns, the :class:`StatsTables` that holds them, and how their rows are put in order.

Every table carries a ``set`` column (the synthetic set a row measures; DESIGN.md section 3):
first in ``layers.csv`` and the ``gap`` table, whose rows are one per (set, layer), and last in
``channels.csv``, ``pairs.csv`` and ``images.csv``, after the columns they always had. Rows go
set by set, in the store's set order (:func:`fakesegment_nb.store.set_names`), and within a set
as a store holding that set alone orders them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .gap import EXTRA_FIELDS, GAP_FIELDS

__all__ = ["StatsTables", "LAYER_COLUMNS", "CHANNEL_COLUMNS", "PAIR_COLUMNS", "IMAGE_COLUMNS", "GAP_COLUMNS",
           "FUSED", "TABLES", "COLUMNS", "STRING_COLUMNS", "table", "image_rows", "by_set", "select_set"]

LAYER_COLUMNS = ["set", "layer", "fid", "kid", "patch_fd", "n_real", "n_synthetic", "channels", "height",
                 "width", "n_nonfinite", *GAP_FIELDS]
CHANNEL_COLUMNS = ["layer", "channel", "mean_real", "std_real", "mean_synthetic", "std_synthetic",
                   "active_real", "active_synthetic", "effect_size", "set"]
PAIR_COLUMNS = ["image", "pair", "layer", "mse", "ssim", "cosine", "set"]
IMAGE_COLUMNS = ["image", "layer", "score", "rank", "set"]
GAP_COLUMNS = ["set", "layer", *EXTRA_FIELDS]
FUSED = "fused"  # the layer name of images.csv's rows that fuse every layer's score
TABLES = ("layers", "channels", "pairs", "images", "gap")
COLUMNS = {"layers": LAYER_COLUMNS, "channels": CHANNEL_COLUMNS, "pairs": PAIR_COLUMNS, "images": IMAGE_COLUMNS,
           "gap": GAP_COLUMNS}
STRING_COLUMNS = ("set", "layer", "image", "pair", "note")


@dataclass
class StatsTables:
    """The tables of a store (``pairs`` is empty when the store has no pairs; ``images`` and
    ``gap`` are empty when not computed)."""

    layers: pd.DataFrame
    channels: pd.DataFrame
    pairs: pd.DataFrame
    images: pd.DataFrame = None
    gap: pd.DataFrame = None

    def __post_init__(self):
        for name in ("images", "gap"):
            if getattr(self, name) is None:
                setattr(self, name, table([], COLUMNS[name]))

    def __getitem__(self, name: str) -> pd.DataFrame:
        return getattr(self, name)


def table(parts, columns, records=False) -> pd.DataFrame:
    """A table of ``columns`` from DataFrames (or, with ``records``, dicts); typed and empty if
    there are none."""
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c in STRING_COLUMNS else "Int64" if c == "rank" else float)
                             for c in columns})
    df = pd.DataFrame.from_records(parts) if records else pd.concat(parts, ignore_index=True)
    return df[columns].reset_index(drop=True)


def image_rows(synthetic_ids, scores: dict, set_name: str) -> pd.DataFrame:
    """``images.csv``'s rows of one set: per layer (network order, then ``fused``), the set's
    synthetic images by score, least realistic first. ``fused`` = the mean over layers of an
    image's finite per-layer scores (every layer's score is in units of a typical real image's
    distance, so they share a scale); ``rank`` is NaN where the score is."""
    if not scores:
        return table([], IMAGE_COLUMNS)
    ids = np.asarray(synthetic_ids, dtype=object)
    if len(scores) > 1 or FUSED not in scores:
        stacked = np.vstack(list(scores.values()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an image with no finite score: NaN
            scores = {**scores, FUSED: np.nanmean(stacked, axis=0)}
    parts = []
    for layer, sc in scores.items():
        df = pd.DataFrame({"image": ids, "layer": layer, "score": np.asarray(sc, dtype=float), "set": set_name})
        df["rank"] = df["score"].rank(method="first", ascending=False).astype("Int64")
        parts.append(df.sort_values("rank", na_position="last", kind="stable"))
    return pd.concat(parts, ignore_index=True)[IMAGE_COLUMNS]


def by_set(parts, order: list[str], columns: list[str]) -> pd.DataFrame:
    """The rows of ``parts`` (DataFrames of one table) set by set in ``order``, each set's rows in
    the order they come (a set's rows come from one part); sets not in ``order`` are left out."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return table([], columns)
    df = pd.concat(parts, ignore_index=True)
    rank = {s: i for i, s in enumerate(order)}
    key = df["set"].map(rank)
    keep = key.notna().to_numpy()
    return df[keep].iloc[np.argsort(key[keep].to_numpy(), kind="stable")][columns].reset_index(drop=True)


def select_set(df: pd.DataFrame, set_name: str | None) -> pd.DataFrame:
    """``df``'s rows of ``set_name`` (all rows when None)."""
    return df if set_name is None else df[df["set"] == set_name].reset_index(drop=True)
