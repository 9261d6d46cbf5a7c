"""fakesegment_nb: where synthetic images look unrealistic to a CNN, layer by layer.

The store readers are imported at once; everything else on first use, so that the command
line and ``import fakesegment_nb`` stay quick.
"""

from importlib import import_module

__version__ = "0.1.0"

from .errors import FakesegmentError  # noqa: E402
from .store import feature_layer, feature_map, image_table, layer_names, open_store  # noqa: E402
# eager: the function shares its module's name, and a lazy attribute would lose to the module
from .evaluate import evaluate  # noqa: E402

_LAZY = {
    "stats": ["layer_table", "channel_table", "pair_table", "domain_stats", "write_stats", "compare_stores",
              "image_scores", "gap_profile"],
    "probe": ["make_probe"],
    "maps": ["compute_maps", "paired_maps", "reference_maps", "read_maps", "write_maps"],
    "segments": ["find_regions", "attribute", "region_mask"],
    "report": ["run_report"],
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["FakesegmentError", "open_store", "feature_map", "feature_layer", "image_table",
           "layer_names", "evaluate", "__version__", *_WHERE]


def __getattr__(name):
    if name in _WHERE:
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
