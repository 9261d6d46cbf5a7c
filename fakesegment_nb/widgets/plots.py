"""Static matplotlib/seaborn figures of the domain statistics (dashboard, notebooks, reports).

Every function takes the tables of :mod:`fakesegment_nb.stats` and returns a
:class:`matplotlib.figure.Figure` that is not registered with pyplot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["METRIC_LABELS", "layer_distance_figure", "channel_distribution_figure", "effect_heatmap_figure",
           "pair_table_view", "gap_profile_figure"]

METRIC_LABELS = {"fid": "Fréchet distance (per-image vectors)", "kid": "KID (cubic kernel MMD²)",
                 "patch_fd": "Fréchet distance (per-location vectors)"}


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def layer_distance_figure(layers: pd.DataFrame, metric: str = "fid"):
    """Bars of one distance per layer, in network order; with several synthetic sets (a ``set``
    column), one bar per set in each layer, grouped, named by the set."""
    fig = _figure(7.5, 3.4)
    ax = fig.subplots()
    sets = list(pd.unique(layers["set"])) if "set" in layers and len(layers) else [None]
    names = list(pd.unique(layers["layer"].astype(str)))
    width = 0.8 / len(sets)
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    pos = {l: j for j, l in enumerate(names)}
    for i, name in enumerate(sets):
        rows = layers if name is None else layers[layers["set"] == name]
        x = np.array([pos[l] for l in rows["layer"].astype(str)]) + (i - (len(sets) - 1) / 2) * width
        vals = rows[metric].to_numpy(dtype=float)
        n = rows[["n_real", "n_synthetic"]].iloc[0] if {"n_real", "n_synthetic"} <= set(rows) and len(rows) else None
        label = None if name is None else name + (f" ({int(n['n_synthetic'])} images)" if n is not None else "")
        bars = ax.bar(x, vals, width=width, color=colours[i % len(colours)], label=label)
        ax.bar_label(bars, labels=[f"{x:.3g}" for x in vals], fontsize=7 if len(sets) > 1 else 8, padding=2)
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel("layer (network order)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    n = layers[["n_real", "n_synthetic"]].iloc[0] if {"n_real", "n_synthetic"} <= set(layers) and len(layers) else None
    if len(sets) > 1:
        sub = f" ({int(n['n_real'])} real images; one bar per synthetic set)" if n is not None else ""
        ax.legend(fontsize=8, title="synthetic set", title_fontsize=8)
    else:
        sub = f" ({int(n['n_real'])} real, {int(n['n_synthetic'])} synthetic images)" if n is not None else ""
    ax.set_title(f"Real vs synthetic distance per layer: {metric}{sub}", fontsize=11)
    ax.margins(y=0.15)
    return fig


def channel_distribution_figure(values: np.ndarray, domains, layer: str, channel: int,
                                effect_size: float | None = None):
    """Per-image channel means of real and synthetic images: seaborn violins with the points."""
    import seaborn as sns

    fig = _figure(6.0, 3.8)
    ax = fig.subplots()
    df = pd.DataFrame({"domain": np.asarray(domains, dtype=str), "mean activation": np.asarray(values, float)})
    order = [d for d in ("real", "synthetic") if (df["domain"] == d).any()]
    palette = {"real": "#4c72b0", "synthetic": "#dd8452"}
    sns.violinplot(data=df, x="domain", y="mean activation", hue="domain", order=order, palette=palette,
                   inner=None, cut=0, ax=ax, legend=False)
    sns.stripplot(data=df, x="domain", y="mean activation", order=order, color="black", size=4, ax=ax)
    d = "" if effect_size is None or not np.isfinite(effect_size) else f", Cohen's d = {effect_size:+.2f}"
    ax.set_title(f"{layer} · channel {channel}{d}\nper-image channel mean, real vs synthetic", fontsize=11)
    ax.set_xlabel("domain")
    ax.set_ylabel("channel mean over y, x")
    return fig


def effect_heatmap_figure(channels: pd.DataFrame, layers: list[str]):
    """Layer x channel heat map of Cohen's d (synthetic − real); grey where a layer has no such channel."""
    import matplotlib

    width = int(channels["channel"].max()) + 1 if len(channels) else 1
    grid = np.full((len(layers), width), np.nan)
    for i, layer in enumerate(layers):
        rows = channels[channels["layer"] == layer]
        grid[i, rows["channel"].to_numpy(dtype=int)] = rows["effect_size"].to_numpy(dtype=float)
    finite = np.abs(grid[np.isfinite(grid)])
    lim = float(np.percentile(finite, 99)) if finite.size else 1.0
    lim = lim if lim > 0 else 1.0
    fig = _figure(9.0, 1.2 + 0.42 * len(layers))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xlabel("channel")
    ax.set_ylabel("layer")
    ax.set_title("Effect size per channel (Cohen's d, synthetic − real; colour clipped at the 99th percentile)",
                 fontsize=11)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("Cohen's d")
    return fig


def pair_table_view(pairs: pd.DataFrame, layer: str | None = None, sort: str = "mse",
                    ascending: bool = False) -> pd.DataFrame:
    """The pair table for one layer (or all), sorted by a column."""
    t = pairs if layer in (None, "all") else pairs[pairs["layer"] == layer]
    return t.sort_values(sort, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def gap_profile_figure(profiles: dict, title: str | None = None):
    """The gap profile of one or several stores on the same axes: per layer (network order),
    ``c2st_auroc`` with its bootstrap interval (0.5 = chance; filled marker and * where
    ``c2st_p < 0.05``) and ``fid_ratio`` with the fid interval over the noise floor (log
    scale; 1 = the distance between two halves of the real images).

    Parameters
    ----------
    profiles : ``{label: DataFrame}`` with the columns of :func:`fakesegment_nb.stats.gap_profile`
        (one row per layer, in network order). Stores with different layers share the
        x axis by depth; each point is labelled with its layer where the names differ.
    """
    fig = _figure(9.0, 6.4)
    ax_auc, ax_fid = fig.subplots(2, 1, sharex=True)
    names = [list(df["layer"].astype(str)) for df in profiles.values()]
    same_layers = all(n == names[0] for n in names)
    k = len(profiles)
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    for i, (label, df) in enumerate(profiles.items()):
        c = colours[i % len(colours)]
        x = np.arange(len(df)) + (i - (k - 1) / 2) * 0.12
        auc = df["c2st_auroc"].to_numpy(float)
        sig = df["c2st_p"].to_numpy(float) < 0.05
        err = np.abs(np.vstack([auc - df["c2st_lo"].to_numpy(float), df["c2st_hi"].to_numpy(float) - auc]))
        ax_auc.errorbar(x, auc, yerr=err, color=c, marker="none", linestyle="-", lw=1.2, capsize=3, label=label)
        ax_auc.scatter(x[sig], auc[sig], color=c, s=40, zorder=3)
        ax_auc.scatter(x[~sig], auc[~sig], facecolor="white", edgecolor=c, s=40, zorder=3)
        for xi, yi in zip(x[sig], auc[sig]):
            ax_auc.annotate("*", (xi, yi), textcoords="offset points", xytext=(4, 2), color=c, fontsize=12)
        floor = df["fid_floor"].to_numpy(float)
        ratio = df["fid_ratio"].to_numpy(float)
        with np.errstate(all="ignore"):
            lo, hi = df["fid_lo"].to_numpy(float) / floor, df["fid_hi"].to_numpy(float) / floor
        err = np.abs(np.vstack([ratio - lo, hi - ratio]))
        ax_fid.errorbar(x, ratio, yerr=err, color=c, marker="o", lw=1.2, capsize=3, label=label)
        if not same_layers:
            for xi, yi, name in zip(x, ratio, df["layer"].astype(str)):
                if np.isfinite(yi):
                    ax_fid.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7, color=c)
    ax_auc.axhline(0.5, color="grey", lw=1, ls="--")
    ax_auc.set_ylim(min(0.3, np.nanmin([np.nanmin(d["c2st_lo"].to_numpy(float), initial=0.5) for d in profiles.values()]) - 0.02), 1.02)
    ax_auc.set_ylabel("classifier AUROC\n(0.5 = chance)")
    ax_auc.set_title(title or "Gap profile: how well each layer tells synthetic from real\n"
                     "filled / * = permutation p < 0.05; bars = 90% bootstrap intervals", fontsize=10)
    ax_fid.axhline(1.0, color="grey", lw=1, ls="--")
    finite = [v for d in profiles.values() for v in d["fid_ratio"].to_numpy(float) if np.isfinite(v) and v > 0]
    if finite:
        ax_fid.set_yscale("log")
    ax_fid.set_ylabel("FID / noise floor\n(1 = two halves of the real images)")
    n = len(names[0]) if names else 0
    longest = max(names, key=len) if names else []
    ax_fid.set_xticks(range(len(longest)), longest if same_layers else [f"{j}" for j in range(len(longest))])
    ax_fid.set_xlabel("layer (network order)" if same_layers else "layer depth (network order; names at the points)")
    if k > 1 or n:
        ax_auc.legend(fontsize=8, loc="best")
    return fig
