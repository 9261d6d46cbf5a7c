"""Figures of an enhancer's effect, for notebooks/04_close_the_gap.ipynb (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..images import load_rgb

__all__ = ["plot_gap", "show_before_after", "show_maps"]


def plot_gap(table: pd.DataFrame, title: str = "", before: str | None = None, after: str | None = None):
    """The gap of both sets (or stores) on the same axes: FID per layer before and after (log
    scale) and, where the table has it, c2st AUROC; layers the enhancer trained on are shaded.
    ``before``/``after`` name the lines (default: the sets :func:`gap_table` compared)."""
    before = before or table.attrs.get("before_set", "synthetic")
    after = after or table.attrs.get("after_set", "enhanced")
    import matplotlib.pyplot as plt

    has_c2st = "c2st_before" in table
    fig, axes = plt.subplots(1, 2 if has_c2st else 1, figsize=(10 if has_c2st else 5.5, 3.6), squeeze=False)
    x = np.arange(len(table))
    panels = [("fid", "FID (held-out)", True)] + ([("c2st", "c2st AUROC (0.5 = indistinguishable)", False)]
                                                  if has_c2st else [])
    for ax, (key, label, log) in zip(axes[0], panels):
        for i, trained in enumerate(table["trained"]):
            if trained:
                ax.axvspan(i - 0.4, i + 0.4, color="0.9", zorder=0)
        ax.plot(x, table[f"{key}_before"], "o-", color="tab:red", label=f"before: {before}")
        ax.plot(x, table[f"{key}_after"], "o-", color="tab:green", label=f"after: {after}")
        if log:
            ax.set_yscale("log")
        else:
            ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
        ax.set_xticks(x, [f"{l}{' (trained)' if t else ''}" for l, t in zip(table["layer"], table["trained"])])
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_before_after(inputs, outputs, names: Sequence[str], real=None):
    """Rows of ``input | enhanced`` (``| real twin`` when ``real`` has an image of the same name)."""
    import matplotlib.pyplot as plt

    cols = 3 if real is not None else 2
    fig, axes = plt.subplots(len(names), cols, figsize=(3 * cols, 3 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        panels = [("synthetic (input)", Path(inputs) / name), ("enhanced", Path(outputs) / name)]
        if real is not None:
            twin = next((p for p in Path(real).glob(Path(name).stem + ".*")), None)
            panels.append(("real twin (scene)", twin))
        for ax, (label, path) in zip(row, panels):
            ax.axis("off")
            if path is not None and Path(path).is_file():
                ax.imshow(load_rgb(path))
                ax.set_title(f"{label}\n{name}", fontsize=8)
    fig.tight_layout()
    return fig


def show_maps(before, after, images: Sequence[str], method: str = "reference", after_images=None):
    """Each image's ``method`` map before and after enhancement, on one colour scale per row;
    ``after_images``: the enhanced images' ids (default ``images``; another set of one store
    has other ids: ``after`` may then be the same store)."""
    import matplotlib.pyplot as plt

    from ..maps import score_map

    fig, axes = plt.subplots(len(images), 2, figsize=(6.5, 3 * len(images)), squeeze=False)
    for row, img, img_after in zip(axes, images, after_images or images):
        maps = [score_map(before, img, method), score_map(after, img_after, method)]
        finite = np.concatenate([m[np.isfinite(m)] for m in maps])
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
        for ax, m, label, name in zip(row, maps, ("before", "after"), (img, img_after)):
            im = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax)
            ax.set_title(f"{label}: {name}\n(mean {np.nanmean(m):.2f})", fontsize=8)
            ax.axis("off")
        fig.colorbar(im, ax=row.tolist(), shrink=0.8)
    return fig
