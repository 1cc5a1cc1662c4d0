"""The node contract: typed parameters, declared ports, and the lifecycle the runtime drives.

A node never imports zmq or msgpack, so tests drive it directly::

    node = SomeNode("f", SomeNode.Params(k=3))
    out_meta = node.setup({"events_in": PortMeta("events", SensorSize(128, 128, 2))})
    outputs = node.process("events_in", packet)      # {"events_out": [Packet, ...]}
    outputs = node.flush()                           # end of stream

Parameters are frozen dataclasses whose fields are declared with :func:`param` (help text,
range, choices), as dv-processing modules declare typed options.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import numpy as np

from spikeflow.service.errors import ParamError
from spikeflow.service.events import SensorSize
from spikeflow.service.packet import Packet


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None):
    """Declare a node parameter: a dataclass field carrying its help text, range and choices."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults (params are frozen)")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoParams:
    """Parameters of a node that has none."""


@dataclass(frozen=True)
class PortMeta:
    """What flows on a port: packet kind and the sensor size of its coordinate space."""

    kind: str
    sensor_size: SensorSize


Outputs = dict[str, list[Packet]]


class Node:
    """Base of every processing node. Subclasses set ``type_name``, ``Params``, ``inputs``, ``outputs``.

    ``inputs``/``outputs`` map port name -> packet kind (``"events"``, ``"spikes"``, ``"labels"``,
    ``"metrics"``, or ``"any"``). The runtime checks kinds and sensor sizes when the graph is
    built, never per message.
    """

    type_name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    inputs: ClassVar[dict[str, str]] = {"events_in": "events"}
    outputs: ClassVar[dict[str, str]] = {"events_out": "events"}
    is_source: ClassVar[bool] = False
    is_sink: ClassVar[bool] = False

    def __init__(self, name: str, params: Any = None):
        self.name = name
        self.params = self.Params() if params is None else params
        if not isinstance(self.params, self.Params):
            raise TypeError(f"{type(self).__name__} expects {self.Params.__name__}, got {type(params).__name__}")

    # -- lifecycle --------------------------------------------------------------------------
    def setup(self, meta: dict[str, PortMeta]) -> dict[str, PortMeta]:
        """Called once before any packet with the metadata of every input port.

        Returns the metadata of every output port. The default passes the sensor size of the
        first input through to every output.
        """
        size = next(iter(meta.values())).sensor_size if meta else SensorSize(0, 0, 0)
        return {port: PortMeta(kind, size) for port, kind in self.outputs.items()}

    def process(self, port: str, packet: Packet) -> Outputs:
        """Handle one packet arriving on ``port``; return packets per output port.

        Returned packets are handed on by reference: to the nodes downstream in this worker,
        and to edges, which may send them a little later (batches). Never modify their arrays
        afterwards; emit a fresh array, or a view of one that is no longer written."""
        raise NotImplementedError

    def flush(self) -> Outputs:
        """End of stream: emit anything still buffered."""
        return {}

    def close(self) -> None:
        """Release resources (files, sockets). Called after ``flush``; must be idempotent."""

    # -- learned state and counters ---------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Learned state as named arrays (saved in snapshots as npz)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} has no learned state; got keys {sorted(state)}")

    def stats(self) -> dict[str, Any]:
        """Node-specific counters (the runtime adds packet/event counts and latency itself)."""
        return {}

    def configure(self, **changes: Any) -> None:
        """Live parameter change (the one ``configUpdate`` path): validated like the graph file."""
        merged = {**dataclasses.asdict(self.params), **changes}
        self.params = build_params(type(self), merged, key=f"nodes.{self.name}.params")


class Source(Node):
    """A node with no inputs that produces packets (replay, simulator, network input).

    The runtime iterates :meth:`packets` until it is exhausted or :meth:`stop` is called.
    """

    inputs: ClassVar[dict[str, str]] = {}
    is_source: ClassVar[bool] = True

    def __init__(self, name: str, params: Any = None):
        super().__init__(name, params)
        self._stop = False

    def packets(self) -> Iterator[tuple[str, Packet]]:
        """Yield ``(output_port, packet)`` pairs; pace here if the source is real time."""
        raise NotImplementedError

    def stop(self) -> None:
        """Ask :meth:`packets` to end at the next opportunity (thread-safe flag)."""
        self._stop = True

    @property
    def stopping(self) -> bool:
        return self._stop

    def process(self, port: str, packet: Packet) -> Outputs:
        raise RuntimeError(f"source {self.name} has no input port {port!r}")


# -- parameter parsing --------------------------------------------------------------------

def param_specs(params_cls: type) -> list[dict[str, Any]]:
    """Describe every parameter (name, type, default, help, min, max, choices) for docs and CLI."""
    hints = typing.get_type_hints(params_cls)
    out = []
    for f in dataclasses.fields(params_cls):
        out.append({"name": f.name, "type": _type_name(hints.get(f.name, Any)), "default": f.default,
                    "help": f.metadata.get("help", ""), "min": f.metadata.get("min"),
                    "max": f.metadata.get("max"), "choices": f.metadata.get("choices")})
    return out


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def build_params(node_cls: type, raw: dict[str, Any] | None, key: str = "params"):
    """Validate a raw mapping (from TOML) into ``node_cls.Params``; errors name the key path."""
    params_cls = node_cls.Params
    raw = dict(raw or {})
    hints = typing.get_type_hints(params_cls)
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamError(f"{key}.{unknown[0]}",
                         f"unknown parameter for {node_cls.type_name or node_cls.__name__}; "
                         f"known: {sorted(fields) or 'none'}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        values[name] = _coerce(raw[name], hints.get(name, Any), f, f"{key}.{name}")
    return params_cls(**values)


def _coerce(value: Any, tp: Any, f: dataclasses.Field, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        tp = non_none[0] if len(non_none) == 1 else Any
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamError(key, f"expected true/false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ParamError(key, f"expected an integer, got {value!r}")
        value = int(value)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ParamError(key, f"expected a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ParamError(key, f"expected a string, got {value!r}")
    elif origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParamError(key, f"expected a list, got {value!r}")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ParamError(key, f"expected {len(args)} items, got {len(value)}")
        item_tp = args[0] if args else Any
        value = tuple(_coerce(v, args[i] if args and args[-1] is not Ellipsis else item_tp, f, f"{key}[{i}]")
                      for i, v in enumerate(value))
    lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ParamError(key, f"expected one of {list(choices)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ParamError(key, f"must be >= {lo}, got {value!r}")
        if hi is not None and value > hi:
            raise ParamError(key, f"must be <= {hi}, got {value!r}")
    return value
