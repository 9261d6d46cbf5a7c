"""Which channels of which layers depart from real inside a region of an image.

A map-free view of a region, used by the Explorer where no unrealistic-detail map scores the
image; where one does, :func:`fakesegment_nb.segments.attribute` splits the map's score exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import FakesegmentError


def layer_box(box: tuple[int, int, int, int], input_size: tuple[int, int],
              layer_shape: tuple[int, int]) -> tuple[slice, slice]:
    """An input-pixel box ``(x0, x1, y0, y1)`` as row/column slices of a ``(h, w)`` feature grid.

    The slices always hold at least one cell.
    """
    x0, x1, y0, y1 = box
    H, W = input_size
    h, w = layer_shape
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise FakesegmentError(f"region {box} is not inside the {W}x{H} network input")
    r0 = min(int(np.floor(y0 * h / H)), h - 1)
    c0 = min(int(np.floor(x0 * w / W)), w - 1)
    r1 = max(int(np.ceil(y1 * h / H)), r0 + 1)
    c1 = max(int(np.ceil(x1 * w / W)), c0 + 1)
    return slice(r0, r1), slice(c0, c1)


def region_drivers(view, image: str, box: tuple[int, int, int, int], top: int = 10) -> pd.DataFrame:
    """Rank (layer, channel) by how far ``image``'s mean activation inside ``box`` departs from real.

    The reference is the image's paired real image when it has one, else the mean over all
    real images; departures are divided by the spread of the real images' region means
    (their standard deviation, or the channel's spread over the whole store when there are
    fewer than two real images), so channels with large raw activations do not dominate.

    Parameters
    ----------
    view : a :class:`fakesegment_nb.widgets.StoreView` (or anything with the same readers).
    image : image id.
    box : ``(x0, x1, y0, y1)`` in network-input pixels, end exclusive.
    top : number of rows to return.

    Returns
    -------
    DataFrame with columns ``layer, channel, value, reference, z`` sorted by ``|z|``.
    """
    table = view.table
    real = np.flatnonzero(table["domain"].to_numpy() == "real")
    partner = view.partner(image)
    if partner is None and len(real) == 0:
        raise FakesegmentError("region drivers need real images to compare with; this store has none")
    i = table.index.get_loc(image)
    frames = []
    for layer in view.layers:
        rows, cols = layer_box(box, view.input_size, view.layer_shape(layer))
        da = view.tree["layers"][layer]["features"]
        means = np.asarray(da.isel(y=rows, x=cols).values, dtype=np.float64).mean(axis=(2, 3))  # (N, C)
        value = means[i]
        ref = means[table.index.get_loc(partner)] if partner is not None else means[real].mean(axis=0)
        spread = means[real].std(axis=0, ddof=1) if len(real) >= 2 else means.std(axis=0)
        scale = np.where(np.isfinite(spread) & (spread > 0), spread, np.nan)
        z = (value - ref) / scale
        frames.append(pd.DataFrame({"layer": layer, "channel": np.arange(len(value)), "value": value,
                                    "reference": ref, "z": z}))
    out = pd.concat(frames, ignore_index=True).dropna(subset=["z"])
    order = np.argsort(-np.abs(out["z"].to_numpy()), kind="stable")
    return out.iloc[order[:top]].reset_index(drop=True)

