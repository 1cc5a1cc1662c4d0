"""Node type registry: built-in node modules plus third-party ``spikeflow.nodes`` entry points.

A third-party package exposes a node class with, in its pyproject::

    [project.entry-points."spikeflow.nodes"]
    my_filter = "my_pkg.nodes:MyFilter"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .errors import GraphError

BUILTIN_MODULES = (
    # Each module registers its node classes with @register when imported.
    "spikeflow.nodes.io",            # replay, simulate, record, print
    "spikeflow.nodes.filters",       # noise filters, tonic_transform
    "spikeflow.service.zmq_nodes",   # zmq_input, publish
    "spikeflow.nodes.encoders",      # dog_encoder, polarity_encoder
    "spikeflow.nodes.snn",           # spiking conv / pool / wta with STDP
    "spikeflow.nodes.loihi",         # loihi_emulator
    "spikeflow.nodes.classifiers",   # readout and classifiers
    "spikeflow.nodes.scoreboard",    # live predictions vs ground truth, run summary
)

_REGISTRY: dict[str, type] = {}
_loaded = False


def register(cls: type) -> type:
    """Class decorator: make ``cls`` available under ``cls.type_name``."""
    name = getattr(cls, "type_name", "")
    if not name:
        raise TypeError(f"{cls.__name__} has no type_name")
    prev = _REGISTRY.get(name)
    if prev is not None and prev is not cls:
        raise TypeError(f"node type {name!r} registered twice: {prev.__module__}.{prev.__name__} "
                        f"and {cls.__module__}.{cls.__name__}")
    _REGISTRY[name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    for ep in entry_points(group="spikeflow.nodes"):
        cls = ep.load()
        if not getattr(cls, "type_name", ""):
            cls.type_name = ep.name
        register(cls)


def get(type_name: str, key: str = "type") -> type:
    """The node class for ``type_name``; a GraphError naming ``key`` lists the known types."""
    _load()
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise GraphError(key, f"unknown node type {type_name!r}; known: {sorted(_REGISTRY)}") from None


def all_types() -> dict[str, type]:
    """Every registered node type, by name."""
    _load()
    return dict(sorted(_REGISTRY.items()))
