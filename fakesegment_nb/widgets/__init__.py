"""Jupyter widgets over a feature store: :class:`Explorer`, :class:`Gallery`, :class:`DomainDashboard`,
and :class:`ReportContext`, what the report notebook shows.

Every widget shows a banner when the store's weights are untrained, reads the store lazily,
and carries a static HTML view of itself for front ends without a widget manager
(nbconvert HTML, reports).

Maps are shown per image side by side, each titled by the question it answers ("looks rendered
here", "unusual details here", "differs from its real twin here"), drawn over the image at its
own aspect ratio (:mod:`.mappanels`).

The names below are imported on first use: the modules that need no ipywidgets
(:mod:`.storeview`, :mod:`.markup`, :mod:`.render`, :mod:`.plots`, :mod:`.mappanels`,
:mod:`.explorer_panels`) can be imported, and tested, without it.
"""

from importlib import import_module

_LAZY = {
    "storeview": ["StoreView", "layer_list", "store_header"],
    "markup": ["banner_html"],
    "dashboard": ["DomainDashboard"],
    "explorer": ["Explorer"],
    "gallery": ["Gallery"],
    "report_context": ["ReportContext"],
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
