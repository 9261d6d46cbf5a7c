"""fakesegment_nb: where synthetic images look unrealistic to a CNN, layer by layer."""

__version__ = "0.1.0"

from .errors import FakesegmentError  # noqa: E402
from .store import feature_layer, feature_map, image_table, layer_names, open_store  # noqa: E402

__all__ = ["FakesegmentError", "open_store", "feature_map", "feature_layer", "image_table",
           "layer_names", "__version__"]
