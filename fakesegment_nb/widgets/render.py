"""Panels as data, drawn fast for the widgets and as a static matplotlib figure; no ipywidgets.

Interactive redraws avoid matplotlib: arrays are colour-mapped through a lookup table and
encoded to PNG with Pillow (a few milliseconds for a 300x300 panel); titles and colour bars
are HTML (:class:`~fakesegment_nb.widgets.panelview.PanelView` shows them). :func:`panels_figure`
draws the same :class:`Panel` list with matplotlib (axes, titles, colour bars) for static output:
reports, HTML export, the widgets' PNG fallback.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .markup import esc

__all__ = ["ColorBar", "Panel", "EDGE", "lut", "colorize", "upsample", "blend", "heat_range",
           "outline", "heat_overlay", "draw_box", "png", "colorbar_html", "note_rgb", "panels_figure", "figure_png",
           "figure_html", "static_fallback"]

NAN_GREY = np.array([200, 200, 200], np.uint8)
EDGE = (0, 229, 255)  # mask outlines and region boxes: cyan, apart from every colour of magma


@dataclass
class ColorBar:
    """A colour bar: colour map, limits, label, log scale or not."""

    cmap: str
    lo: float
    hi: float
    label: str
    log: bool = False
    mark: float | None = None  # a value marked on the bar (the mask threshold: the outline drawn)
    mark_label: str = "mask threshold (outline)"


@dataclass
class Panel:
    """One titled image: ``rgb`` (H, W, 3) uint8, optional colour bar, optional note instead.

    ``extent``: the axes' ``(0, width, height, 0)`` in the units of ``xlabel``/``ylabel`` when
    ``rgb`` is drawn at another size (an original image shown at a display size); default its
    own pixels.
    """

    title: str
    rgb: np.ndarray | None = None
    cbar: ColorBar | None = None
    note: str | None = None
    xlabel: str = "x (input px)"
    ylabel: str = "y (input px)"
    extent: tuple[float, float, float, float] | None = None


@lru_cache(maxsize=16)
def lut(cmap: str) -> np.ndarray:
    """The 256-colour uint8 lookup table of a matplotlib colour map."""
    import matplotlib

    return (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def colorize(a: np.ndarray, cmap: str, lo: float, hi: float, log: bool = False) -> np.ndarray:
    """Float array -> uint8 RGB through ``cmap`` between ``lo`` and ``hi`` (NaN grey; ``log``:
    logarithmic scale, needs ``0 < lo``)."""
    a = np.asarray(a, dtype=np.float32)
    if log:
        nan = ~np.isfinite(a)
        a = np.log10(np.maximum(a, lo))
        a[nan] = np.nan
        lo, hi = np.log10(lo), np.log10(hi)
    span = hi - lo if hi > lo else 1.0
    idx = np.clip((np.nan_to_num(a, nan=lo) - lo) * (255.0 / span), 0, 255).astype(np.uint8)
    out = lut(cmap)[idx]
    nan = ~np.isfinite(a)
    if nan.any():
        out[nan] = NAN_GREY
    return out


def upsample(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``(h, w, ...)`` array to ``shape`` (cells stay visible)."""
    h, w = rgb.shape[:2]
    H, Wd = shape
    if (h, w) == (H, Wd):
        return rgb
    rows = np.minimum((np.arange(H) * h) // H, h - 1)
    cols = np.minimum((np.arange(Wd) * w) // Wd, w - 1)
    return rgb[rows[:, None], cols[None, :]]


def blend(base: np.ndarray, top: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``base`` with ``top`` laid over it, per-pixel ``weight`` in [0, 1]."""
    w = weight[..., None].astype(np.float32)
    return (base * (1 - w) + top * w + 0.5).astype(np.uint8)


def heat_range(score: np.ndarray) -> tuple[float, float, bool]:
    """Colour range of a heat map drawn over a whole image: its 1st to 99th percentile (robust to
    a few extreme cells), on a log scale when both ends are positive and an order of magnitude
    apart (heavy-tailed distances)."""
    f = score[np.isfinite(score)]
    if f.size == 0:
        return 0.0, 1.0, False
    lo, hi = (float(v) for v in np.percentile(f, [1, 99]))
    hi = hi if hi > lo else lo + max(abs(lo), 1.0) * 1e-3
    return lo, hi, bool(lo > 0 and hi / lo >= 10)


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The pixels of ``mask`` on its boundary, ``width`` pixels thick: the mask minus its binary
    erosion (scipy); the image border counts as outside, so a mask that covers everything is
    outlined along the border."""
    from scipy.ndimage import binary_erosion

    m = np.asarray(mask, bool)
    return m & ~binary_erosion(m, iterations=width, border_value=0)


def heat_overlay(rgb: np.ndarray, score: np.ndarray, mask: np.ndarray | None, lo: float, hi: float, alpha: float,
                 cmap: str = "magma", log: bool = False, edge=EDGE) -> np.ndarray:
    """``rgb`` with the heat map ``score`` (same height and width) over it and the outline of
    ``mask`` drawn in ``edge``.

    Each pixel's colour weighs ``alpha`` times where its score sits between ``lo`` and ``hi``
    (0 at ``lo``): low scores leave the image visible, high ones colour it. So the picture stays
    readable when the mask covers almost the whole image: the heat shows where within it the
    score is highest, the outline where it ends.
    """
    a = np.asarray(score, np.float32)
    top = colorize(a, cmap, lo, hi, log)
    if log:
        t = (np.log10(np.maximum(a, lo)) - np.log10(lo)) / (np.log10(hi) - np.log10(lo) or 1.0)
    else:
        t = (a - lo) / ((hi - lo) or 1.0)
    out = blend(rgb, top, np.clip(np.nan_to_num(t, nan=0.0), 0, 1) * float(alpha))
    if mask is not None:
        out[outline(mask)] = edge
    return out


def draw_box(rgb: np.ndarray, box: tuple[int, int, int, int], colour=EDGE, width: int = 2) -> np.ndarray:
    """A copy of ``rgb`` with the box ``(x0, x1, y0, y1)``, in ``rgb``'s pixels, outlined."""
    x0, x1, y0, y1 = box
    out = rgb.copy()
    H, Wd = out.shape[:2]
    x0, x1, y0, y1 = max(0, x0), min(Wd, x1), max(0, y0), min(H, y1)
    out[y0:y0 + width, x0:x1] = colour
    out[max(y1 - width, 0):y1, x0:x1] = colour
    out[y0:y1, x0:x0 + width] = colour
    out[y0:y1, max(x1 - width, 0):x1] = colour
    return out


def png(rgb: np.ndarray) -> bytes:
    """``rgb`` (H, W, 3) uint8 as PNG bytes (fast compression: for interactive redraws)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="png", compress_level=1)
    return buf.getvalue()


def colorbar_html(cb: ColorBar | None) -> str:
    """A colour bar as HTML (a CSS gradient between its limits; '' for None)."""
    if cb is None:
        return ""
    stops = ", ".join(f"rgb({r},{g},{b})" for r, g, b in lut(cb.cmap)[::32].tolist() + [lut(cb.cmap)[-1].tolist()])
    return ('<div style="font-size:12px;font-family:sans-serif;max-width:300px">'
            '<div style="display:flex;align-items:center;gap:6px">'
            f"<span>{cb.lo:.3g}</span>"
            f'<div style="flex:0 0 170px;height:12px;border:1px solid #888;background:linear-gradient(to right, {stops})"></div>'
            f"<span>{cb.hi:.3g}</span></div>"
            f"<div style='color:#444;text-align:center'>{esc(cb.label)}{' (log scale)' if cb.log else ''}</div>"
            + (f"<div style='color:#444;text-align:center'>{esc(cb.mark_label)}: {cb.mark:.3g}</div>"
               if cb.mark is not None else "") + "</div>")


def note_rgb(shape: tuple[int, int]) -> np.ndarray:
    """A light grey placeholder image of ``shape`` (a source image that cannot be read)."""
    return np.full((*shape, 3), 240, np.uint8)


def panels_figure(panels: list, ncols: int = 3, size: float = 3.6, suptitle: str | None = None):
    """The panels as a static matplotlib figure (axes labels, titles, colour bars).

    ``panels``: a flat list laid out ``ncols`` to a row, or a list of rows (lists of panels),
    each row starting on a new line of the figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if panels and all(isinstance(r, list) for r in panels):
        rows = [r for r in panels if r]
        ncols = max(len(r) for r in rows)
        panels = [p for r in rows for p in r + [None] * (ncols - len(r))]
    nrows = max(1, -(-len(panels) // ncols))
    # each row as high as its tallest image needs (a row of 2:1 images takes half a square's height)
    ratios = []
    for r in range(nrows):
        shapes = [(p.extent[2], p.extent[1]) if p.extent else p.rgb.shape[:2]
                  for p in panels[r * ncols:(r + 1) * ncols] if p is not None and p.rgb is not None]
        ratios.append(float(np.clip(max((h / w for h, w in shapes), default=1.0), 0.45, 1.3)))
    fig = Figure(figsize=(ncols * size * 1.4, sum(ratios) * size + nrows * size * 0.3), dpi=90,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, gridspec_kw={"height_ratios": [r + 0.3 for r in ratios]})).ravel()
    for ax, p in zip(axes, panels):
        if p is None:  # a row's padding
            ax.set_axis_off()
            continue
        ax.set_title(p.title, fontsize=9)
        if p.rgb is None:
            ax.set_axis_off()
            ax.text(0.5, 0.5, textwrap.fill(p.note or "", 40), ha="center", va="center", fontsize=9, color="#555",
                    transform=ax.transAxes)
            continue
        H, Wd = p.rgb.shape[:2]
        ax.imshow(p.rgb, extent=p.extent or (0, Wd, H, 0), interpolation="nearest")
        ax.set_xlabel(p.xlabel, fontsize=8)
        ax.set_ylabel(p.ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if p.note:  # over the image, outside the layout (a long note must not shrink the axes)
            ax.text(0.5, 0.5, textwrap.fill(p.note, 32), ha="center", va="center", fontsize=8,
                    transform=ax.transAxes, bbox=dict(fc="white", ec="#999", alpha=0.9)).set_in_layout(False)
        if p.cbar is not None:
            _colorbar(fig, ax, p.cbar)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(textwrap.fill(suptitle, int(ncols * size * 1.35 * 90 / 7)), fontsize=10)
    return fig


def _colorbar(fig, ax, cb_: ColorBar) -> None:
    """``cb_`` beside ``ax``: plain numbers (a log scale labels 1, 2, 5 of each decade), the
    marked value as a line in the outline colour."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import FuncFormatter

    norm = LogNorm(cb_.lo, cb_.hi) if cb_.log else Normalize(cb_.lo, cb_.hi)
    cb = fig.colorbar(ScalarMappable(norm, matplotlib.colormaps[cb_.cmap]), ax=ax, fraction=0.046, pad=0.03)
    cb.set_label(cb_.label + (" (cyan: threshold)" if cb_.mark is not None else ""), fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if cb_.log:
        def lead(v):
            return round(v / 10 ** np.floor(np.log10(v)))

        cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}" if v > 0 and lead(v) in (2, 5) else ""))
    if cb_.mark is not None and cb_.lo <= cb_.mark <= cb_.hi:
        cb.ax.axhline(cb_.mark, color=np.array(EDGE) / 255, lw=2)


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def figure_html(fig, alt: str = "figure") -> str:
    """A matplotlib figure as an ``<img>`` with the PNG inline (self-contained HTML)."""
    import base64

    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def static_fallback(data: dict, widget) -> dict:
    """Add the widget's current view as ``text/html`` (figures inline) to its display bundle.

    Front ends with a widget manager (JupyterLab) show the live widget; those without one
    (nbconvert HTML, GitHub, a kernel-less viewer) show this static view in the same place.
    """
    try:
        html = widget.static_html()
    except Exception as exc:  # a fallback must never break the live widget
        html = f"<pre>{esc(type(widget).__name__)}: no static view ({esc(exc)})</pre>"
    return {**data, "text/html": html}
