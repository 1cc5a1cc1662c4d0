"""From spike traffic to operation counts to energy and latency on a mapped Loihi network.

Counting (:class:`TrafficCounter`): spikes are binned into timesteps of ``timestep_us``; each
spike of layer L costs, in the layer fed by L, one synaptic op per target (its real fan-out),
marks its targets active, and sends one message per distinct destination core along X-then-Y
routes; on L's own core it is a ``spike_out`` and, when L learns, ``fan_in`` synaptic updates.
Every compartment is updated every timestep: active when it received input, else inactive.

Charging (:func:`evaluate`), with a :class:`~spikeflow.nodes.loihi_costs.CostProfile`::

    E = sum_op count_op * energy_op + static_mw * T
    latency(step) = max_core sum_op count_op(core) * time_op + max route time + barrier(tiles)
    T = sum_step latency(step)

Per inference: energy (uJ), average power E/T (mW), latency T (ms), energy-delay product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from spikeflow.service.errors import ModelError

from . import loihi_kernels as K
from .loihi_costs import CostProfile
from .loihi_mapping import Mapping

CORE_COUNTS = ("syn_ops", "syn_updates", "active", "spikes_out", "msgs_out", "msgs_in")
STEP_COUNTS = ("hops_ew", "hops_ns", "within_tile", "host_msgs")


@dataclass
class StepCounts:
    """Per-timestep counts: ``core[name]`` is (n_steps, n_cores), ``step[name]`` is (n_steps,)."""

    step0: int
    n_steps: int
    core: dict[str, np.ndarray]
    step: dict[str, np.ndarray]
    route_max_ns: np.ndarray

    @classmethod
    def zeros(cls, step0: int, n_steps: int, n_cores: int) -> "StepCounts":
        return cls(step0, n_steps, {k: np.zeros((n_steps, n_cores), np.int64) for k in CORE_COUNTS},
                   {k: np.zeros(n_steps, np.int64) for k in STEP_COUNTS}, np.zeros(n_steps, np.float64))

    def totals(self, core_neurons: np.ndarray) -> dict[str, int]:
        """Totals over the window, including inactive neuron updates."""
        t = {k: int(v.sum()) for k, v in self.core.items()}
        t.update({k: int(v.sum()) for k, v in self.step.items()})
        t["inactive"] = int(self.n_steps * core_neurons.sum() - t["active"])
        t["timesteps"] = self.n_steps
        return t


class TrafficCounter:
    """Accumulates operation counts from spike packets over the timesteps ``[step0, step0 + n_steps)``.

    Timestep of a spike: ``(t - t_origin_us) // timestep_us``. Spikes outside the range are
    ignored and counted in ``dropped``. ``last_step`` arrays persist across windows when the
    same ``marks`` dict is passed on, so activity is never double counted.
    """

    def __init__(self, mapping: Mapping, profile: CostProfile, timestep_us: int, t_origin_us: int,
                 step0: int, n_steps: int, marks: dict[str, np.ndarray] | None = None):
        if timestep_us <= 0:
            raise ModelError(f"timestep_us: must be > 0, got {timestep_us}")
        self.mapping = mapping
        self.profile = profile
        self.timestep_us = int(timestep_us)
        self.t_origin_us = int(t_origin_us)
        self.counts = StepCounts.zeros(step0, n_steps, mapping.n_cores)
        self.marks = marks if marks is not None else {}
        self.dropped = 0
        self.spikes_seen: dict[str, int] = {}

    def neuron_ids(self, layer: str, events: np.ndarray) -> np.ndarray:
        """(y, x, c) neuron ids of spikes in ``layer``'s output grid; ModelError names the bad index."""
        spec = self.mapping.spec(layer)
        c, h, w = spec.out_shape
        x, y, p = events["x"].astype(np.int64), events["y"].astype(np.int64), events["p"].astype(np.int64)
        bad = (x < 0) | (x >= w) | (y < 0) | (y >= h) | (p < 0) | (p >= c)
        if bad.any():
            i = int(np.argmax(bad))
            raise ModelError(f"layer {layer}: spike {i} (x={x[i]}, y={y[i]}, p={p[i]}) outside its output grid "
                             f"(C, H, W) = {spec.out_shape}")
        return (y * w + x) * c + p

    def add(self, layer: str, events: np.ndarray) -> None:
        """Count the cost of ``events`` (spikes of ``layer``)."""
        if events is None or len(events) == 0:
            return
        cnt = self.counts
        step = (events["t"].astype(np.int64) - self.t_origin_us) // self.timestep_us
        keep = (step >= cnt.step0) & (step < cnt.step0 + cnt.n_steps)
        self.dropped += int((~keep).sum())
        if not keep.all():
            events, step = events[keep], step[keep]
        if len(events) == 0:
            return
        nid = self.neuron_ids(layer, events)
        if len(step) > 1 and np.any(step[1:] < step[:-1]):
            order = np.argsort(step, kind="stable")
            step, nid = step[order], nid[order]
        self.spikes_seen[layer] = self.spikes_seen.get(layer, 0) + len(nid)
        m = self.mapping
        n_cores = m.n_cores
        rows = step - cnt.step0
        src = m.placements.get(layer)
        if src is not None:
            gcore = src.cores[src.core_of(nid)]
            flat = rows * n_cores + gcore
            cnt.core["spikes_out"] += np.bincount(flat, minlength=cnt.n_steps * n_cores).reshape(cnt.n_steps, n_cores)
            if src.spec.learn:
                upd = np.bincount(flat, weights=src.fan_in[nid], minlength=cnt.n_steps * n_cores)
                cnt.core["syn_updates"] += upd.astype(np.int64).reshape(cnt.n_steps, n_cores)
            sx, sy = m.tile_x[gcore], m.tile_y[gcore]
        else:  # off-chip spike generators enter the mesh at tile (0, 0)
            sx = np.zeros(len(nid), np.int64)
            sy = np.zeros(len(nid), np.int64)
        consumer = m.consumer(layer)
        if consumer is None:
            return
        dst = m.placements[consumer.name]
        last = self.marks.setdefault(consumer.name, np.full(consumer.n_neurons, -1, np.int64))
        per_spike = np.zeros(len(nid), np.int64)
        dcores = dst.cores
        syn = np.zeros((cnt.n_steps, dst.n_cores), np.int64)
        act = np.zeros_like(syn)
        mins = np.zeros_like(syn)
        p = self.profile
        K.count_traffic_(step, cnt.step0, nid, sx, sy, consumer.geometry(), dst.bounds, m.tile_x[dcores],
                         m.tile_y[dcores], p.time_ns("hop_ew"), p.time_ns("hop_ns"), p.time_ns("within_tile"),
                         last, syn, act, mins, per_spike, cnt.step["hops_ew"], cnt.step["hops_ns"],
                         cnt.step["within_tile"], cnt.route_max_ns)
        cnt.core["syn_ops"][:, dcores] += syn
        cnt.core["active"][:, dcores] += act
        cnt.core["msgs_in"][:, dcores] += mins
        if src is not None:
            cnt.core["msgs_out"] += np.bincount(flat, weights=per_spike,
                                                minlength=cnt.n_steps * n_cores).astype(np.int64).reshape(cnt.n_steps, n_cores)
        else:
            cnt.step["host_msgs"] += np.bincount(rows, weights=per_spike, minlength=cnt.n_steps).astype(np.int64)


@dataclass
class Result:
    """Energy and latency of one window/inference."""

    energy_pj: dict[str, float]      # per operation
    core_time_ns: np.ndarray         # (n_steps,) slowest core
    route_ns: np.ndarray             # (n_steps,)
    barrier_ns: float
    static_mw: float
    counts: dict[str, int]

    @property
    def latency_ns(self) -> float:
        return float(self.core_time_ns.sum() + self.route_ns.sum() + self.barrier_ns * len(self.core_time_ns))

    @property
    def dynamic_pj(self) -> float:
        return float(sum(v for k, v in self.energy_pj.items() if k != "static"))

    @property
    def energy_uj(self) -> float:
        return float(sum(self.energy_pj.values())) * 1e-6

    def as_dict(self) -> dict:
        lat_ms = self.latency_ns * 1e-6
        e_uj = self.energy_uj
        return {"energy_uj": e_uj, "dynamic_energy_uj": self.dynamic_pj * 1e-6,
                "static_energy_uj": self.energy_pj.get("static", 0.0) * 1e-6,
                "power_mw": (e_uj * 1e-6) / (lat_ms * 1e-3) * 1e3 if lat_ms > 0 else 0.0,
                "latency_ms": lat_ms, "edp_uj_ms": e_uj * lat_ms,
                "timesteps": len(self.core_time_ns),
                "latency_per_step_us_max": float((self.core_time_ns + self.route_ns).max(initial=0.0) + self.barrier_ns) * 1e-3,
                "energy_by_op_uj": {k: v * 1e-6 for k, v in self.energy_pj.items()},
                "time_split_ms": {"cores": float(self.core_time_ns.sum()) * 1e-6,
                                  "routing": float(self.route_ns.sum()) * 1e-6,
                                  "barrier": self.barrier_ns * len(self.core_time_ns) * 1e-6},
                "counts": dict(self.counts)}


def _per_core(mapping: Mapping, fn) -> np.ndarray:
    return np.array([fn(t) for t in mapping.core_layer_type], np.float64)


def evaluate(counts: StepCounts, mapping: Mapping, profile: CostProfile) -> Result:
    """Charge ``counts`` with ``profile``: energy per op, per-step latency, static energy."""
    c = counts.core
    p = profile
    neurons = mapping.core_neurons.astype(np.int64)
    inactive = neurons[None, :] - c["active"]
    e_syn = _per_core(mapping, p.syn_energy_pj)
    t_syn = _per_core(mapping, p.syn_time_ns)
    energy = {
        "syn_spike": float((c["syn_ops"] * e_syn[None, :]).sum()),
        "syn_update": float(c["syn_updates"].sum()) * p.energy_pj("syn_update"),
        "neuron_active": float(c["active"].sum()) * p.energy_pj("neuron_active"),
        "neuron_inactive": float(inactive.sum()) * p.energy_pj("neuron_inactive"),
        "spike_out": float(c["spikes_out"].sum()) * p.energy_pj("spike_out"),
        "axon_out": float(c["msgs_out"].sum()) * p.energy_pj("axon_out"),
        "axon_in": float(c["msgs_in"].sum()) * p.energy_pj("axon_in"),
        "within_tile": float(counts.step["within_tile"].sum()) * p.energy_pj("within_tile"),
        "hop_ew": float(counts.step["hops_ew"].sum()) * p.energy_pj("hop_ew"),
        "hop_ns": float(counts.step["hops_ns"].sum()) * p.energy_pj("hop_ns"),
    }
    core_ns = (c["syn_ops"] * t_syn[None, :] + c["syn_updates"] * p.time_ns("syn_update")
               + c["active"] * p.time_ns("neuron_active") + inactive * p.time_ns("neuron_inactive")
               + c["spikes_out"] * p.time_ns("spike_out") + c["msgs_out"] * p.time_ns("axon_out")
               + c["msgs_in"] * p.time_ns("axon_in"))
    core_max = core_ns.max(axis=1) if core_ns.shape[1] else np.zeros(counts.n_steps)
    barrier = p.barrier_ns(mapping.n_tiles)
    latency_ns = float(core_max.sum() + counts.route_max_ns.sum() + barrier * counts.n_steps)
    energy["static"] = p.static_mw * 1e-3 * latency_ns * 1e-9 * 1e12  # mW * ns -> pJ
    return Result(energy, core_max, counts.route_max_ns.copy(), barrier, p.static_mw, counts.totals(neurons))


def run_traffic(mapping: Mapping, profile: CostProfile, spikes: dict[str, np.ndarray], timestep_us: int,
                t0_us: int, t1_us: int) -> tuple[Result, TrafficCounter]:
    """Count and charge the spikes of one inference window ``[t0_us, t1_us)`` (per layer name)."""
    if t1_us <= t0_us:
        raise ModelError(f"window: t1_us {t1_us} must be > t0_us {t0_us}")
    n_steps = -(-(t1_us - t0_us) // timestep_us)
    counter = TrafficCounter(mapping, profile, timestep_us, t0_us, 0, n_steps)
    for layer in [s.name for s in mapping.layers]:
        if layer in spikes:
            counter.add(layer, spikes[layer])
    unknown = sorted(set(spikes) - {s.name for s in mapping.layers})
    if unknown:
        raise ModelError(f"spikes: unknown layer {unknown[0]!r}; known: {[s.name for s in mapping.layers]}")
    return evaluate(counter.counts, mapping, profile), counter


# -- fixed point -----------------------------------------------------------------------------

def quantise_weights(w: np.ndarray, bits: int) -> np.ndarray:
    """Weights rounded to Loihi's ``bits``-bit grid (1-9 bits incl. sign when any weight is < 0).

    Scale = max |w| of the layer; non-negative layers use all ``bits`` for magnitude
    (2^bits - 1 levels), mixed-sign ones one bit for the sign (2^(bits-1) - 1 levels, >= 1).
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 9:
        raise ModelError(f"weight_bits: expected an integer in 1..9, got {bits!r}")
    w = np.asarray(w, dtype=np.float64)
    scale = float(np.abs(w).max(initial=0.0))
    if scale == 0.0:
        return w.astype(np.float32)
    levels = max((1 << (bits - 1)) - 1, 1) if (w < 0).any() else (1 << bits) - 1
    return (np.round(w / scale * levels) / levels * scale).astype(np.float32)


def fixed_point_report(run: Callable[[dict[str, np.ndarray]], dict], weights: dict[str, np.ndarray],
                       bits: int) -> dict:
    """Run a network with float and with ``bits``-bit weights and report what changes.

    ``run(weights) -> {"spikes": {layer: count}, "predictions": array | None, "labels": array | None}``.
    Reports the relative output-spike change per layer and, when labels are given, the accuracy
    of both and its change (what deployment at this precision costs in accuracy).
    """
    ref = run(weights)
    q = run({k: quantise_weights(v, bits) for k, v in weights.items()})
    layers = {}
    for name, n_ref in ref["spikes"].items():
        n_q = q["spikes"].get(name, 0)
        layers[name] = {"spikes_float": int(n_ref), "spikes_fixed": int(n_q),
                        "relative_change": (n_q - n_ref) / n_ref if n_ref else (0.0 if n_q == 0 else float("inf"))}
    out: dict = {"weight_bits": int(bits), "layers": layers,
                 "max_abs_weight_error": {k: float(np.abs(quantise_weights(v, bits) - v).max(initial=0.0))
                                          for k, v in weights.items()}}
    labels = ref.get("labels")
    if labels is not None and ref.get("predictions") is not None:
        labels = np.asarray(labels)
        acc_f = float(np.mean(np.asarray(ref["predictions"]) == labels))
        acc_q = float(np.mean(np.asarray(q["predictions"]) == labels))
        out.update({"accuracy_float": acc_f, "accuracy_fixed": acc_q, "accuracy_change": acc_q - acc_f,
                    "prediction_agreement": float(np.mean(np.asarray(ref["predictions"]) == np.asarray(q["predictions"])))})
    return out
