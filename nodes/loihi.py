"""``loihi_emulator``: what the tapped spike traffic would cost on a Loihi chip, live.

The node maps the layers it is given onto Loihi cores once (``setup``), then counts the
operations every tapped spike causes (``loihi_model.TrafficCounter``) and, for each window of
``window_us`` sensor time, emits a ``metrics`` packet with the window's energy, power, latency
and counts, followed by one with the cumulative figures (``data["scope"]`` says which).

Taps: up to eight spike ports (``spikes_in``, ``spikes_in_1`` .. ``spikes_in_7``). A packet's
layer is ``data["layer"]`` if present, else the node part of its stream (``conv1.spikes_out``
-> ``conv1``) when that is a layer name, else the port's position in ``taps``. A window is
charged once every tapped layer (``taps``, default: every layer) has sent a packet reaching
past its end (the spiking layers send one packet per sample, spikes or not); ``flush``
charges what is left. Spikes arriving for an already charged window are counted as late.

Layers: ``layers`` lists the network in chain order, each item an inline table with the
spiking core's ``describe()`` keys, or a layer name resolved from ``spec_file`` (a TOML file
with ``[[layers]]`` tables) or bound by the caller with :meth:`LoihiEmulator.bind_layers`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spikeflow.nodes.base import Node, Outputs, PortMeta, param
from spikeflow.nodes.warm import every_pixel, warm_kernels
from spikeflow.service.errors import GraphError, ModelError, ParamError
from spikeflow.service.events import SensorSize
from spikeflow.service.packet import Packet, now_ns
from spikeflow.service.registry import register

from .loihi_costs import load_profile
from .loihi_mapping import LayerSpec, Mapping, map_network
from .loihi_model import Result, TrafficCounter, evaluate

TAP_PORTS = ("spikes_in",) + tuple(f"spikes_in_{i}" for i in range(1, 8))


def load_layer_specs(path: str | Path, key: str = "spec_file") -> list[LayerSpec]:
    """Layer specs from a TOML file of ``[[layers]]`` tables (``describe()`` keys)."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamError(key, f"no such layer spec file {str(p)!r}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ParamError(key, f"{p}: not valid TOML: {e}") from None
    layers = raw.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ParamError(f"{key}.layers", f"{p}: expected one or more [[layers]] tables")
    return [LayerSpec.from_describe(d, key=f"{p}: layers[{i}]") for i, d in enumerate(layers)]


@dataclass(frozen=True)
class LoihiEmulatorParams:
    layers: tuple[Any, ...] = param((), "network in chain order: describe() tables, or layer names (from spec_file / bound)")
    spec_file: str = param("", "TOML file with [[layers]] tables (describe() keys) naming the network's layers")
    taps: tuple[str, ...] = param((), "layer name tapped by each port in order (spikes_in, spikes_in_1, ...); default: packet's layer")
    profile: str = param("davies2018", "cost profile of the cost table (davies2018: pre-silicon; sanafe_loihi: calibrated)")
    cost_table: str = param("", "your own cost table TOML (same layout as nodes/loihi_costs.toml); empty = bundled")
    static_mw: float = param(-1.0, "static power in mW (user parameter); < 0 = the profile's figure")
    weight_bits: int = param(8, "synaptic weight precision stored on chip (bits, incl. sign)", min=1, max=9)
    timestep_us: int = param(0, "sensor time per Loihi timestep (us); 0 = the spiking layers' step_us from the packets",
                             min=0)
    window_us: int = param(100_000, "metrics window (us of sensor time), rounded down to whole timesteps", min=1)
    multichip: bool = param(False, "allow a network larger than one chip (else mapping fails naming the chips needed)")


@register
class LoihiEmulator(Node):
    """Emulates the energy and latency of the tapped layers on Loihi from their real spike traffic."""

    type_name = "loihi_emulator"
    Params = LoihiEmulatorParams
    inputs = {p: "spikes" for p in TAP_PORTS}
    optional_inputs = TAP_PORTS[1:]
    mixed_input_sizes = True  # each port has its layer's grid; setup() checks them against the specs
    outputs = {"metrics_out": "metrics"}
    is_sink = False

    def __init__(self, name: str, params: Any = None):
        super().__init__(name, params)
        p = self.params
        if p.timestep_us and p.window_us < p.timestep_us:
            raise ParamError(f"nodes.{name}.params.window_us",
                             f"must be at least one timestep ({p.timestep_us} us), got {p.window_us}")
        self.profile = load_profile(p.profile, p.cost_table or None)
        if p.static_mw >= 0:
            self.profile = self.profile.with_static_mw(p.static_mw, f"user parameter static_mw of node {name}")
        self._bound: dict[str, LayerSpec] = {}
        self.mapping: Mapping | None = None
        self._reset()

    def _reset(self) -> None:
        self._origin: int | None = None
        self._timestep_us = self.params.timestep_us
        self._windows: dict[int, TrafficCounter] = {}
        self._marks: dict[str, np.ndarray] = {}
        self._watermark: dict[str, int] = {}
        self._seq = 0
        self._emitted_until = 0
        self._cum: dict[str, float] = {}
        self._cum_counts: dict[str, int] = {}
        self._windows_done = 0
        self._dropped = 0

    # -- layers --------------------------------------------------------------------------
    def bind_layers(self, describes: list[dict]) -> None:
        """Make layers known by name (the spiking core's ``describe()`` dicts), before ``setup``."""
        for i, d in enumerate(describes):
            spec = LayerSpec.from_describe(d, key=f"nodes.{self.name}.bound[{i}]")
            self._bound[spec.name] = spec

    def configure(self, **changes: Any) -> None:
        """Live change of the cost side (profile, cost_table, static_mw); the mapping needs a rebuild."""
        fixed = sorted(set(changes) - {"profile", "cost_table", "static_mw"})
        if fixed and self.mapping is not None:
            raise ParamError(f"nodes.{self.name}.params.{fixed[0]}", "changes the mapping or timing: rebuild the graph")
        super().configure(**changes)
        p = self.params
        profile = load_profile(p.profile, p.cost_table or None)
        self.profile = profile.with_static_mw(p.static_mw, f"user parameter static_mw of node {self.name}") \
            if p.static_mw >= 0 else profile

    def _layer_specs(self) -> list[LayerSpec]:
        key = f"nodes.{self.name}.params"
        known = dict(self._bound)
        if self.params.spec_file:
            for s in load_layer_specs(self.params.spec_file, f"{key}.spec_file"):
                known.setdefault(s.name, s)
        items = self.params.layers or tuple(known)
        if not items:
            raise ParamError(f"{key}.layers", "no layers: give describe() tables, a spec_file, or bind_layers()")
        specs = []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                specs.append(LayerSpec.from_describe(item, key=f"{key}.layers[{i}]"))
            elif isinstance(item, str):
                if item not in known:
                    raise ParamError(f"{key}.layers[{i}]", f"unknown layer {item!r}; known: {sorted(known) or 'none'}")
                specs.append(known[item])
            else:
                raise ParamError(f"{key}.layers[{i}]", f"expected a layer name or table, got {item!r}")
        return specs

    def setup(self, meta: dict[str, PortMeta]) -> dict[str, PortMeta]:
        key = f"nodes.{self.name}.params"
        specs = self._layer_specs()
        self.mapping = map_network(specs, self.params.weight_bits, allow_multichip=self.params.multichip)
        names = {s.name for s in specs}
        for i, t in enumerate(self.params.taps):
            if t not in names:
                raise ParamError(f"{key}.taps[{i}]", f"unknown layer {t!r}; layers: {sorted(names)}")
        for port, m in meta.items():
            layer = self._port_layer(port)
            if layer is not None:
                c, h, w = self.mapping.spec(layer).out_shape
                if (m.sensor_size.width, m.sensor_size.height) != (w, h):
                    raise GraphError(f"nodes.{self.name}.inputs.{port}",
                                     f"layer {layer} grid is {w}x{h}, upstream sends {m.sensor_size.width}x"
                                     f"{m.sensor_size.height}")
        self._expect = tuple(self.params.taps) or tuple(names)
        self._reset()
        if meta:
            self._warm(next(iter(meta)))
        return {"metrics_out": PortMeta("metrics", SensorSize(0, 0, 0))}

    def _warm(self, port: str) -> None:
        """Load the traffic and cost kernels now (see :mod:`spikeflow.nodes.warm`): one window
        in which every neuron of every layer spikes once."""
        data = {"step_us": self._timestep_us or 1, "t_start_us": 0}
        probes = []
        for spec in self.mapping.layers:
            c, h, w = spec.out_shape
            probes.append(Packet("spikes", f"{spec.name}.spikes_out", 0, SensorSize(w, h, c), 0,
                                 self.params.window_us, 0, every_pixel((c, h, w)), {**data, "layer": spec.name}))
        warm_kernels(self, port, probes)

    def _port_layer(self, port: str) -> str | None:
        i = TAP_PORTS.index(port) if port in TAP_PORTS else -1
        return self.params.taps[i] if 0 <= i < len(self.params.taps) else None

    def _packet_layer(self, port: str, packet: Packet) -> str:
        names = {s.name for s in self.mapping.layers}
        layer = packet.data.get("layer") if packet.data else None
        if layer is None:
            node = packet.stream.split(".")[0] if packet.stream else ""
            layer = node if node in names else self._port_layer(port)
        if layer is None or layer not in names:
            raise ModelError(f"nodes.{self.name}.inputs.{port}: packet seq {packet.seq} of stream "
                             f"{packet.stream!r} names no known layer ({layer!r}); layers: {sorted(names)}")
        return layer

    # -- processing ----------------------------------------------------------------------
    def process(self, port: str, packet: Packet) -> Outputs:
        if self.mapping is None:
            raise ModelError(f"nodes.{self.name}: process() before setup()")
        if packet.kind != "spikes" or packet.events is None:
            return {}
        layer = self._packet_layer(port, packet)
        if self._origin is None:
            self._start(port, packet)
        ev = packet.events
        if len(ev):
            steps_per_win = self._steps_per_window
            step = (ev["t"].astype(np.int64) - self._origin) // self._timestep_us
            early = step < self._emitted_until * steps_per_win
            self._dropped += int(early.sum())
            win = step // steps_per_win
            for w in np.unique(win[~early]):
                counter = self._counter(int(w))
                counter.add(layer, ev[win == w])
        self._watermark[layer] = max(self._watermark.get(layer, self._origin), int(packet.t1_us))
        return self._emit(min(self._watermark.get(x, self._origin) for x in self._expect))

    def _start(self, port: str, packet: Packet) -> None:
        """First packet: the time origin and, with ``timestep_us = 0``, the layers' step_us."""
        if not self._timestep_us:
            step = (packet.data or {}).get("step_us")
            if not isinstance(step, int) or step <= 0:
                raise ModelError(f"nodes.{self.name}.inputs.{port}: timestep_us = 0 takes the step from the "
                                 f"packets' data['step_us'], but packet seq {packet.seq} of {packet.stream!r} has "
                                 f"{step!r}; set params.timestep_us")
            self._timestep_us = step
        self._origin = int((packet.data or {}).get("t_start_us", packet.t0_us))
        self._steps_per_window = max(1, self.params.window_us // self._timestep_us)
        self._window_us = self._steps_per_window * self._timestep_us

    def _counter(self, w: int) -> TrafficCounter:
        c = self._windows.get(w)
        if c is None:
            spw = self._steps_per_window
            c = TrafficCounter(self.mapping, self.profile, self._timestep_us, self._origin, w * spw, spw,
                               marks=self._marks)
            self._windows[w] = c
        return c

    def _emit(self, until_us: int | None) -> Outputs:
        """Metrics for every window that ends at or before ``until_us`` (None: all buffered)."""
        if self._origin is None:
            return {}
        last = max(self._windows, default=self._emitted_until - 1)
        if until_us is None:
            end_w = last + 1
        else:
            end_w = (until_us - self._origin) // self._window_us
        out = []
        for w in range(self._emitted_until, end_w):
            counter = self._counter(w)
            res = evaluate(counter.counts, self.mapping, self.profile)
            self._windows.pop(w, None)
            out += self._window_packets(w, res)
        self._emitted_until = max(self._emitted_until, end_w)
        return {"metrics_out": out} if out else {}

    def _window_packets(self, w: int, res: Result) -> list[Packet]:
        t0 = self._origin + w * self._window_us
        d = res.as_dict()
        for k in ("energy_uj", "dynamic_energy_uj", "static_energy_uj", "latency_ms"):
            self._cum[k] = self._cum.get(k, 0.0) + d[k]
        for k, v in d["counts"].items():
            self._cum_counts[k] = self._cum_counts.get(k, 0) + int(v)
        self._windows_done += 1
        window = {"scope": "window", "window": w, **_flat(d), "profile": self.profile.name,
                  "timestep_us": self._timestep_us}
        pkts = []
        for data in (window, {"scope": "cumulative", **self.stats()}):
            pkts.append(Packet(kind="metrics", stream=f"{self.name}.metrics_out", seq=self._seq,
                               sensor_size=SensorSize(0, 0, 0), t0_us=t0, t1_us=t0 + self._window_us,
                               sent_ns=now_ns(), data=data))
            self._seq += 1
        return pkts

    def flush(self) -> Outputs:
        return self._emit(None)

    def stats(self) -> dict[str, Any]:
        """Cumulative figures since setup (also what the cumulative metrics packets carry)."""
        e = self._cum.get("energy_uj", 0.0)
        lat = self._cum.get("latency_ms", 0.0)
        m = self.mapping
        return {"windows": self._windows_done, "energy_uj": e, "dynamic_energy_uj": self._cum.get("dynamic_energy_uj", 0.0),
                "static_energy_uj": self._cum.get("static_energy_uj", 0.0), "latency_ms": lat,
                "power_mw": e / lat if lat > 0 else 0.0, "edp_uj_ms": e * lat,
                "energy_per_window_uj": e / self._windows_done if self._windows_done else 0.0,
                "cores": m.n_cores if m else 0, "chips": m.chips if m else 0,
                "late_spikes_dropped": self._dropped, "profile": self.profile.name,
                **{f"n_{k}": v for k, v in self._cum_counts.items()}}


def _flat(d: dict) -> dict:
    """Flatten the result dict for a metrics packet (msgpack-able scalars)."""
    out = {k: v for k, v in d.items() if not isinstance(v, dict)}
    out.update({f"energy_{k}_uj": v for k, v in d["energy_by_op_uj"].items()})
    out.update({f"time_{k}_ms": v for k, v in d["time_split_ms"].items()})
    out.update({f"n_{k}": v for k, v in d["counts"].items()})
    return out
