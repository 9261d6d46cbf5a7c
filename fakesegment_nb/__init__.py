"""fakesegment_nb: where synthetic images look unrealistic to a CNN, layer by layer."""

__version__ = "0.1.0"

from .errors import FakesegmentError  # noqa: E402
from .store import feature_layer, feature_map, image_table, layer_names, open_store  # noqa: E402
from .stats import (channel_table, compare_stores, domain_stats, layer_table,  # noqa: E402
                    pair_table, write_stats)
from .probe import make_probe  # noqa: E402
from .maps import compute_maps, paired_maps, read_maps, reference_maps, write_maps  # noqa: E402
from .segments import attribute, find_regions, region_mask  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .report import run_report  # noqa: E402  (widgets: fakesegment_nb.widgets, imported on demand)

__all__ = ["FakesegmentError", "open_store", "feature_map", "feature_layer", "image_table",
           "layer_names", "__version__",
           "layer_table", "channel_table", "pair_table", "domain_stats", "write_stats", "compare_stores",
           "make_probe", "compute_maps", "paired_maps", "reference_maps", "read_maps", "write_maps",
           "find_regions", "attribute", "region_mask", "evaluate", "run_report"]
