"""fakesegment_nb: where synthetic images look unrealistic to a CNN, layer by layer.

Every name below is imported on first use, so that ``import fakesegment_nb`` and the command
line load neither torch nor xarray until a command needs them (tests/test_house.py holds both
to that).
"""

import sys
from importlib import import_module
from types import ModuleType

from .errors import FakesegmentError

__version__ = "0.1.0"

_LAZY = {
    "store": ["open_store", "feature_map", "feature_layer", "image_table", "set_names", "partners", "layer_names"],
    "evaluate": ["evaluate"],
    "stats": ["layer_table", "channel_table", "pair_table", "domain_stats", "write_stats", "compare_stores",
              "image_scores", "gap_profile"],
    "probe": ["make_probe"],
    "maps": ["compute_maps", "paired_maps", "reference_maps", "read_maps", "write_maps"],
    "segments": ["find_regions", "attribute", "region_mask"],
    "report": ["run_report"],
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["FakesegmentError", "__version__", *_WHERE]


def _load(name: str):
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)


def __getattr__(name):
    if name in _WHERE:
        value = _load(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(ModuleType):
    """``evaluate`` is the function although a module of that name lives in the package:
    importing ``fakesegment_nb.evaluate`` binds the module to the package's attribute, which
    would hide a lazily loaded function; this attribute ignores that binding."""

    @property
    def evaluate(self):
        return _load("evaluate")

    @evaluate.setter
    def evaluate(self, value):
        if not isinstance(value, ModuleType):  # the import system's binding of the submodule is ignored
            raise AttributeError("fakesegment_nb.evaluate is the evaluate function; patch "
                                 "fakesegment_nb.evaluate.evaluate instead")


sys.modules[__name__].__class__ = _Package
