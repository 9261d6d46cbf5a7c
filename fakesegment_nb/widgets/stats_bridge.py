"""Tables from :mod:`fakesegment_nb.stats` for the widgets, or the reason there are none."""

from __future__ import annotations

from ..errors import FakesegmentError
from ._view import optional_module


def stats_tables(view):
    """``(StatsTables, None)`` or ``(None, reason)``; the store's up-to-date cache is used first."""
    stats = optional_module("stats")
    if stats is None:
        return None, "domain statistics need fakesegment_nb.stats, which is not installed"
    if not view.two_domains:
        return None, view.missing_domain()
    try:
        tables = stats.domain_stats(view.source, cache=True)
    except FakesegmentError as exc:
        return None, str(exc)
    keep = lambda df: df[df["layer"].isin(view.layers)].reset_index(drop=True)  # noqa: E731
    images = tables.images[tables.images["layer"].isin([*view.layers, stats.FUSED])].reset_index(drop=True)
    return type(tables)(layers=keep(tables.layers), channels=keep(tables.channels), pairs=keep(tables.pairs),
                        images=images, gap=keep(tables.gap)), None


def stats_available(view) -> str | None:
    """None when statistics can be computed for this store, else why not (reads nothing)."""
    if optional_module("stats") is None:
        return "domain statistics need fakesegment_nb.stats, which is not installed"
    if not view.two_domains:
        return view.missing_domain()
    return None
