"""``PanelView``: one :class:`~fakesegment_nb.widgets.render.Panel` in a live widget."""

from __future__ import annotations

import ipywidgets as W

from .markup import esc
from .render import Panel, colorbar_html, png

__all__ = ["PanelView"]


class PanelView(W.VBox):
    """A panel in a widget: HTML title, PNG image (or a note) and an HTML colour bar.

    The image keeps its aspect ratio: ``width`` pixels wide, at most as high (a tall image is
    fitted into the square).
    """

    def __init__(self, name: str = "fakesegment-panel", width: int = 300, extra: str | None = None):
        self.title = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(width=f"{width}px", height="auto",
                                                           max_height=f"{width}px", object_fit="contain"))
        self.note = W.HTML(layout=W.Layout(width=f"{width}px"))
        self.cbar = W.HTML()
        super().__init__([self.title, self.image, self.note, self.cbar],
                         layout=W.Layout(margin="0 12px 0 0"))
        self.add_class(name)  # a stable handle for browser tests and custom CSS
        if extra:
            self.add_class(extra)
        self.panel: Panel | None = None

    def show(self, panel: Panel) -> None:
        self.panel = panel
        self.title.value = f"<div style='font-size:13px;font-weight:600'>{esc(panel.title).replace(chr(10), '<br>')}</div>"
        if panel.rgb is not None:
            self.image.value = png(panel.rgb)
        self.image.layout.display = None if panel.rgb is not None else "none"
        self.note.value = (f"<div style='color:#555;font-style:italic;padding:40px 8px'>{esc(panel.note)}</div>"
                           if panel.note else "")
        self.cbar.value = colorbar_html(panel.cbar)
