"""Small HTML pieces every widget and the report share: escaping, the untrained-weights banner,
a store's one-line header and label, and the note a panel shows in place of what it cannot draw.

Plain strings, no ipywidgets: the same HTML goes into live widgets, their static views and the
report.
"""

from __future__ import annotations

import html

__all__ = ["esc", "banner_html", "header_html", "note_html", "store_label"]


def esc(text) -> str:
    """``str(text)`` escaped for HTML (quotes included)."""
    return html.escape(str(text))


def banner_html(attrs: dict) -> str:
    """The untrained-weights warning as HTML, from a store's attributes ('' when the weights are trained)."""
    if attrs.get("weights_trained", False):
        return ""
    warning = attrs.get("weights_warning") or "the network was not trained"
    return ('<div class="fakesegment-banner" style="background:#fff3cd;border:1px solid #e0b000;'
            'color:#5c4400;padding:6px 10px;margin:4px 0;border-radius:4px;font-weight:600">'
            f"&#9888; Untrained weights ({esc(attrs.get('weights', '?'))}): {esc(warning)}. "
            "Distances and maps below describe an untrained network, not what a detector sees."
            "</div>")


def header_html(view, title: str) -> str:
    """One line naming the widget (``title``), the store of ``view`` (a
    :class:`~fakesegment_nb.widgets.storeview.StoreView`), its network and how many images of each domain."""
    a = view.attrs
    counts = " / ".join(f"{len(view.images(d))} {d}" for d in view.domains) or "no images"
    sets = getattr(view, "sets", [])
    if len(sets) > 1:
        counts += " in sets " + ", ".join(f"{s} ({len(view.set_images(s))})" for s in sets)
    return (f"<b>{esc(title)}</b> &middot; store <code>{esc(view.url)}</code> &middot; model "
            f"{esc(a.get('model'))} &middot; weights {esc(a.get('weights'))} &middot; {counts}")


def note_html(text: str, kind: str = "missing") -> str:
    """A plain one-line message for a panel that cannot show its content (``kind``: missing or error)."""
    colour = {"missing": "#555", "error": "#a00"}[kind]
    return (f'<div class="fakesegment-note" style="color:{colour};font-style:italic;padding:4px 0">'
            f"{esc(text)}</div>")


def store_label(attrs: dict) -> str:
    """A store's network in words, from its attributes: "model (weights, trained|untrained)"."""
    trained = "trained" if attrs.get("weights_trained") else "untrained"
    return f"{attrs.get('model', '?')} ({attrs.get('weights', '?')}, {trained})"
