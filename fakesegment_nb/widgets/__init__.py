"""Jupyter widgets over a feature store: :class:`Explorer`, :class:`Gallery`, :class:`DomainDashboard`.

Every widget shows a banner when the store's weights are untrained, reads the store lazily,
and carries a static HTML view of itself for front ends without a widget manager
(nbconvert HTML, reports).
"""

from ._view import StoreView, banner_html, store_header
from .dashboard import DomainDashboard
from .explorer import Explorer
from .gallery import Gallery

__all__ = ["Explorer", "Gallery", "DomainDashboard", "StoreView", "banner_html", "store_header"]
