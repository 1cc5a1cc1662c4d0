"""Event filters as nodes: background-activity noise filter, refractory filter, and any tonic transform.

The two native filters keep a per-pixel timestamp map across packets (a filter must not forget
at every packet boundary), run as numba kernels from :mod:`spikeflow.nodes.filter_kernels`,
and drop events outside the sensor (counted, never indexed).
``tonic_transform`` wraps any event->event class of ``tonic.transforms`` by name, so tonic's
whole catalogue is available as nodes (our events carry tonic's field names).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from spikeflow.nodes.base import Node, PortMeta, param
from spikeflow.nodes.filter_kernels import NEVER_US, background_activity_compact_, refractory_compact_
from spikeflow.service.errors import ParamError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, as_events
from spikeflow.service.packet import Packet
from spikeflow.service.registry import register


class _PixelMapFilter(Node):
    """Shared plumbing: a (H, W) int64 last-timestamp map sized from the input metadata.

    Per packet: one fused kernel call that filters and copies the kept events into a fresh
    array (it leaves with the packet, so it cannot be a reused buffer), and the packet's
    metadata copied around it. When every event is kept the input array itself goes on (the
    refractory kernel then copies nothing). On 1 ms packets of a few dozen events, this fixed cost per
    packet, not the filtering, is what the node spends its time on.
    """

    def setup(self, meta):
        size = meta["events_in"].sensor_size
        self._last_t_us = np.full((size.height, size.width), NEVER_US, dtype=np.int64)
        self.events_in = self.events_kept = self.out_of_range = 0
        saved = self._last_t_us.copy()
        probe = np.zeros(1, EVENT_DTYPE)
        self._run(probe, np.empty(1, EVENT_DTYPE))  # compile (or load the cache) now, not mid-stream,
        probe.setflags(write=False)                  # also for read-only input (zero-copy off a socket)
        self._run(probe, np.empty(1, EVENT_DTYPE))
        self._last_t_us[:] = saved
        return {"events_out": PortMeta(meta["events_in"].kind, size)}

    def process(self, port: str, packet: Packet):
        ev = packet.events
        if ev is None or len(ev) == 0:
            return {"events_out": [packet]}
        if ev.dtype != EVENT_DTYPE:
            ev = as_events(ev)
        n = len(ev)
        out = np.empty(n, EVENT_DTYPE)
        n_kept, out_of_range = self._run(ev, out)
        self.out_of_range += out_of_range
        self.events_in += n
        self.events_kept += n_kept
        # all kept: pass the input view on (no copy)
        kept = ev if n_kept == n else out[:n_kept]
        return {"events_out": [packet.with_events(kept)]}

    def state(self) -> dict[str, np.ndarray]:
        """The per-pixel timestamp map, so a restarted worker filters on without a cold start."""
        return {"last_t_us": self._last_t_us.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        last = state.get("last_t_us")
        if last is None or last.shape != self._last_t_us.shape or set(state) != {"last_t_us"}:
            raise ParamError(f"nodes.{self.name}", f"state must be {{'last_t_us': {self._last_t_us.shape} array}}, "
                                                   f"got {{{', '.join(f'{k}: {v.shape}' for k, v in state.items())}}}")
        self._last_t_us[:] = last

    def stats(self) -> dict[str, Any]:
        return {"events_in": self.events_in, "events_kept": self.events_kept,
                "kept_fraction": self.events_kept / self.events_in if self.events_in else 0.0,
                "out_of_range": self.out_of_range}


@dataclass(frozen=True)
class NoiseFilterParams:
    window_us: int = param(5000, "an event survives if a neighbour pixel fired within this many µs", min=1,
                           max=10**9)
    radius: int = param(1, "neighbourhood radius in pixels", min=1, max=5)
    neighbourhood: int = param(8, "8: the full square around the pixel; 4: the cross (tonic's Denoise)",
                               choices=(4, 8))


@register
class NoiseFilter(_PixelMapFilter):
    """Background-activity filter: isolated events (no recent neighbour) are noise and dropped."""

    type_name = "noise_filter"
    Params = NoiseFilterParams

    def _run(self, ev, out):
        p = self.params
        return background_activity_compact_(self._last_t_us, ev, p.window_us, p.radius, p.neighbourhood == 8, out)


@dataclass(frozen=True)
class RefractoryFilterParams:
    refractory_us: int = param(1000, "a pixel stays silent this long after each event it passes", min=0,
                               max=10**9)


@register
class RefractoryFilter(_PixelMapFilter):
    """Per-pixel refractory period: bursts from one pixel are thinned to one event per period."""

    type_name = "refractory_filter"
    Params = RefractoryFilterParams

    def _run(self, ev, out):
        return refractory_compact_(self._last_t_us, ev, self.params.refractory_us, out)


def _is_events(out) -> bool:
    """A structured array with t/x/y/p, or an empty array (tonic returns those when nothing survives)."""
    if not isinstance(out, np.ndarray):
        return False
    if out.dtype.names is None:
        return out.size == 0 and out.ndim == 1
    return {"t", "x", "y", "p"} <= set(out.dtype.names)


# -- tonic ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TonicTransformParams:
    transform: str = param("", "class name in tonic.transforms, e.g. 'Denoise', 'DropEvent', 'Downsample'")
    kwargs: dict | None = param(None, "keyword arguments of the transform, e.g. { filter_time = 10000 }; "
                                      "sensor_size is filled from the input when the transform takes it")
    sensor_size_out: tuple[int, int, int] | None = param(
        None, "output sensor size when the transform changes it and it cannot be derived")


def _tonic_event_transforms() -> list[str]:
    import tonic.transforms as tt

    return sorted(n for n, c in vars(tt).items() if inspect.isclass(c) and not n.startswith("_")
                  and dataclasses.is_dataclass(c) and callable(c))


@register
class TonicTransform(Node):
    """Any ``tonic.transforms`` event->event transform as a node, named in ``params.transform``.

    The transform is built in the constructor (bad name or kwargs fail when the graph loads)
    and tried on a few synthetic events in ``setup`` so that transforms producing frames or
    tensors (``ToFrame``...) are refused before anything runs. Each packet's events are passed
    as a copy, since some transforms edit their input and packets may be shared by branches.
    """

    type_name = "tonic_transform"
    Params = TonicTransformParams

    def __init__(self, name, params=None):
        super().__init__(name, params)
        import tonic.transforms as tt

        key = f"nodes.{name}.params"
        tname = self.params.transform
        cls = getattr(tt, tname, None) if tname else None
        if not inspect.isclass(cls):
            raise ParamError(f"{key}.transform", f"unknown tonic transform {tname!r}; event transforms: "
                                                 f"{', '.join(_tonic_event_transforms())}")
        self._cls = cls
        if self.params.kwargs is not None and not isinstance(self.params.kwargs, dict):
            raise ParamError(f"{key}.kwargs", f"expected a table of keyword arguments, got {self.params.kwargs!r}")
        self._kwargs = dict(self.params.kwargs or {})
        try:
            self._sig = inspect.signature(cls)
        except (TypeError, ValueError):
            self._sig = None
        if self._sig is not None:
            names = set(self._sig.parameters)
            bad = sorted(set(self._kwargs) - names)
            if bad:
                raise ParamError(f"{key}.kwargs.{bad[0]}", f"{tname} has no argument {bad[0]!r}; "
                                                         f"its arguments: {sorted(names)}")
        self._transform = None
        self.events_in = self.events_out = 0

    def _build(self, size: SensorSize):
        kwargs = dict(self._kwargs)
        for k, v in kwargs.items():  # TOML arrays arrive as lists; tonic wants tuples
            if isinstance(v, list):
                kwargs[k] = tuple(v)
        if self._sig is not None and "sensor_size" in self._sig.parameters and "sensor_size" not in kwargs:
            kwargs["sensor_size"] = tuple(size)
        try:
            return self._cls(**kwargs)
        except (TypeError, ValueError, AssertionError) as e:
            raise ParamError(f"nodes.{self.name}.params.kwargs", f"{self.params.transform}({kwargs}): {e}") from None

    def setup(self, meta):
        m = meta["events_in"]
        self._transform = self._build(m.sensor_size)
        probe = np.zeros(4, EVENT_DTYPE)
        probe["t"] = [0, 10, 20, 30]
        probe["x"] = [0, 1, 0, 1]
        probe["y"] = [0, 0, 1, 1]
        probe["p"] = [0, 1, 0, 1]
        try:
            out = self._transform(probe.copy())
        except Exception as e:  # noqa: BLE001 - any failure of the foreign transform is a config error
            raise ParamError(f"nodes.{self.name}.params.transform",
                             f"{self.params.transform} fails on events: {type(e).__name__}: {e}") from None
        if not _is_events(out):
            shape = getattr(out, "shape", type(out).__name__)
            raise ParamError(f"nodes.{self.name}.params.transform",
                             f"{self.params.transform} returns {shape}, not events; only event->event "
                             f"transforms can be nodes")
        return {"events_out": PortMeta(m.kind, self._out_size(m.sensor_size))}

    def _out_size(self, size: SensorSize) -> SensorSize:
        if self.params.sensor_size_out is not None:
            return SensorSize(*self.params.sensor_size_out)
        t = self._transform
        target = getattr(t, "target_size", None)
        if target is not None:
            return SensorSize(int(target[0]), int(target[1]), size.channels)
        factor = getattr(t, "spatial_factor", None)
        if factor is not None:
            fx, fy = (factor, factor) if np.isscalar(factor) else factor
            return SensorSize(int(size.width * fx), int(size.height * fy), size.channels)
        crop = getattr(t, "size", None)
        if type(t).__name__ == "CenterCrop" and crop is not None:
            cw, ch = (crop, crop) if np.isscalar(crop) else crop
            return SensorSize(int(cw), int(ch), size.channels)
        return size

    def process(self, port, packet):
        ev = packet.events
        if ev is None or len(ev) == 0:
            return {"events_out": [packet]}
        res = self._transform(ev.copy())
        out = as_events(res) if res.dtype.names else np.zeros(0, EVENT_DTYPE)
        self.events_in += len(ev)
        self.events_out += len(out)
        return {"events_out": [packet.with_events(out)]}

    def stats(self):
        return {"transform": self.params.transform, "events_in": self.events_in, "events_out": self.events_out}
