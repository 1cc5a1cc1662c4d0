"""Spiking layers (Kheradpisheh et al. 2018, SpykeTorch semantics) and their graph nodes.

Layers work outside the graph on one *sample* (one window, T time steps):

* spike-wave ``(T, C, H, W)`` (cumulative, SpykeTorch's layout: ``wave[t] = 1`` from the first
  spike on), or
* spike-time map ``(C, H, W)``: float with ``inf`` = no spike, or int32 with
  :data:`NO_SPIKE` (the internal form the kernels use).

::

    conv1 = SpikingConv(2, 30, 5, threshold=15.0, padding=2, stdp=Stdp(k=5, radius=2))
    pool1 = FirstSpikePool(2, 2)
    out = pool1(conv1(times, time_steps=30, learn=True))     # STDP on conv1's winners

Rules (paper symbols): IF neuron V_i(t) = V_i(t−1) + Σ_j W_ij S_j(t), spike when V_i(t) > θ, at
most once per sample; pointwise inhibition keeps the earliest spike per position; k-WTA picks
learning winners; STDP ΔW_ij = a⁺ W_ij(1−W_ij) if t_j ≤ t_i else a⁻ W_ij(1−W_ij).

Nodes ``snn_conv`` and ``snn_pool`` wrap the layers in the graph: one ``spikes`` packet in = one
sample (its ``data`` carries ``time_steps``, ``step_us``, ``t_start_us``), one packet out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from spikeflow.nodes import snn_kernels as sk
from spikeflow.nodes.base import Node, PortMeta, param
from spikeflow.nodes.learned_state import check_state, load_state, save_state
from spikeflow.nodes.warm import every_pixel, warm_kernels
from spikeflow.service.errors import GraphError, ModelError
from spikeflow.service.events import EVENT_DTYPE, SensorSize
from spikeflow.service.packet import Packet
from spikeflow.service.registry import register

NO_SPIKE = sk.NO_SPIKE


# -- spike representations -------------------------------------------------------------------

def to_times(x: np.ndarray, time_steps: int | None = None) -> tuple[np.ndarray, int]:
    """Any sample form -> (int32 spike-time map, T).

    A 4-D array is a cumulative spike-wave (T, C, H, W); a 3-D float array a time map with inf
    for silence; a 3-D integer array a time map with NO_SPIKE (or any value >= T) for silence.
    """
    x = np.asarray(x)
    if x.ndim == 4:
        on = x > 0
        t = np.argmax(on, axis=0).astype(np.int32)
        t[~on.any(axis=0)] = NO_SPIKE
        return t, x.shape[0]
    if x.ndim != 3:
        raise ValueError(f"expected a spike-wave (T, C, H, W) or a spike-time map (C, H, W), got shape {x.shape}")
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if (x[finite] < 0).any() or (x[finite] != np.round(x[finite])).any():
            raise ValueError("spike times must be non-negative whole time steps (inf = no spike)")
        t = np.full(x.shape, NO_SPIKE, dtype=np.int32)
        t[finite] = x[finite].astype(np.int32)
    elif x.dtype.kind in "iu":
        t = np.where((x < 0) | (x >= NO_SPIKE), NO_SPIKE, x).astype(np.int32)
        if (x < 0).any():
            raise ValueError("spike times must be non-negative")
    else:
        raise ValueError(f"unsupported spike array dtype {x.dtype}")
    spiking = t != NO_SPIKE
    inferred = int(t[spiking].max()) + 1 if spiking.any() else 1
    T = inferred if time_steps is None else int(time_steps)
    if T < inferred and time_steps is not None:
        t = np.where(t >= T, NO_SPIKE, t).astype(np.int32)
    return t, T


def float_times(t: np.ndarray) -> np.ndarray:
    """int32 spike-time map -> float map with inf for silence (the public form)."""
    out = t.astype(np.float64)
    out[t == NO_SPIKE] = np.inf
    return out


def to_wave(t: np.ndarray, time_steps: int) -> np.ndarray:
    """int32 spike-time map -> cumulative uint8 spike-wave (T, C, H, W)."""
    return (t[None] <= np.arange(time_steps, dtype=np.int64).reshape(-1, 1, 1, 1)).astype(np.uint8)


def _like_input(x: np.ndarray, t: np.ndarray, time_steps: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4:
        return to_wave(t, time_steps)
    if x.dtype.kind == "f":
        return float_times(t)
    return t


def times_from_packet(events: np.ndarray, shape: tuple[int, int, int], t_start_us: int, step_us: int,
                      time_steps: int, out: np.ndarray | None = None) -> np.ndarray:
    """Spike events (p = channel) of one sample -> int32 (C, H, W) map of first-spike steps
    (written into ``out`` when given, e.g. a buffer a node reuses for every sample)."""
    step = (events["t"] - t_start_us) // step_us
    if out is None or out.shape != tuple(shape):
        out = np.empty(shape, dtype=np.int32)
    return sk.times_from_events_into(out, events["p"].astype(np.int64), events["y"].astype(np.int64),
                                     events["x"].astype(np.int64), step.astype(np.int64), time_steps)


def events_from_times(t: np.ndarray, t_start_us: int, step_us: int, time_steps: int | None = None) -> np.ndarray:
    """int32 (C, H, W) spike-time map -> spike events sorted by time (p = feature map); one scan
    of the map (a counting sort by step), no dense index arrays."""
    if time_steps is None:
        spiking = t != NO_SPIKE
        time_steps = int(t[spiking].max()) + 1 if spiking.any() else 1
    order, starts = sk.spikes_by_step(np.ascontiguousarray(t, dtype=np.int32), int(time_steps))
    return events_from_sparse(order, starts, t.shape, t_start_us, step_us)


def sparse_from_packet(events: np.ndarray, shape: tuple[int, int, int], t_start_us: int, step_us: int,
                       time_steps: int, first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spike events (p = channel) of one sample -> sparse sample ``(order, starts)`` (see
    :func:`~spikeflow.nodes.snn_kernels.spikes_by_step`): the first spike of each neuron, as
    :func:`times_from_packet` would map it, without a dense map. ``first``: a reusable flat int32
    NO_SPIKE buffer of C·H·W entries (left so)."""
    c, h, w = (int(v) for v in shape)
    if first is None or first.size != c * h * w:
        first = np.full(c * h * w, NO_SPIKE, dtype=np.int32)
    return sk.sparse_from_fields(events["t"], events["p"], events["y"], events["x"], int(t_start_us), int(step_us), 1,
                                 c, h, w, int(time_steps), first)


def events_from_sparse(order: np.ndarray, starts: np.ndarray, shape: tuple[int, int, int], t_start_us: int,
                       step_us: int) -> np.ndarray:
    """Sparse sample -> spike events sorted by time, then (p, y, x) (p = feature map)."""
    _, h, w = shape
    ev = np.empty(len(order), EVENT_DTYPE)
    sk.fill_events_(ev["t"], ev["x"], ev["y"], ev["p"], order, starts, int(h), int(w), int(t_start_us), int(step_us))
    return ev


# -- layers ------------------------------------------------------------------------------------

@dataclass
class Stdp:
    """STDP and competition parameters of one conv layer (paper symbols a⁺, a⁻).

    ``a_plus``/``a_minus``: initial learning rates (a⁻ < 0). Every ``double_every`` learned samples
    a⁺ doubles up to ``a_plus_max`` and a⁻ follows at the initial ratio a⁻/a⁺ (0 = fixed rates).
    ``k`` winners per sample, no two within Chebyshev ``radius``; weights stay in [w_lo, w_hi].
    """

    a_plus: float = 0.004
    a_minus: float = -0.003
    a_plus_max: float = 0.15
    double_every: int = 500
    k: int = 1
    radius: int = 0
    stabilize: bool = True
    w_lo: float = 0.0
    w_hi: float = 1.0

    def __post_init__(self):
        if self.a_plus < 0 or self.a_minus > 0:
            raise ValueError(f"STDP needs a_plus >= 0 and a_minus <= 0, got {self.a_plus}, {self.a_minus}")
        if self.k < 1 or self.radius < 0:
            raise ValueError(f"k must be >= 1 and radius >= 0, got k={self.k}, radius={self.radius}")
        if not 0.0 <= self.w_lo < self.w_hi:
            raise ValueError(f"weights need 0 <= w_lo < w_hi (IF neurons with excitatory synapses), got "
                             f"[{self.w_lo}, {self.w_hi}]")


@dataclass
class ConvResult:
    """One sample through a conv layer: int32 spike times, potential at the first spike, final
    potential (step T−1) (both empty when not asked for), learning winners (n, 3) rows
    (feature, y, x), and T."""

    times: np.ndarray
    v_first: np.ndarray
    v_final: np.ndarray
    winners: np.ndarray
    time_steps: int
    used_dense: bool = False


def _padded(c_out: int) -> int:
    """Workspace width for C_out maps: a multiple of 8 float64 (one AVX-512 register), so the
    event kernel's per-position row updates have no scalar remainder."""
    return -(-int(c_out) // 8) * 8


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected one int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


class SpikingConv:
    """Convolution of integrate-and-fire neurons with shared weights and online STDP.

    Weights W (C_out, C_in, kh, kw) start as N(weight_mean, weight_std) clipped to [0, 1].
    ``leak`` = 1 gives IF; < 1 gives LIF (V ← leak·V per step). ``homeostasis_plus`` > 0 enables
    the adaptive threshold of Diehl & Cook (θ_f += plus whenever feature f fires in a learned
    sample, ×``homeostasis_decay`` per learned sample). ``path``: "event", "dense" or "auto"
    (event-driven while fewer than ``dense_fraction`` of the inputs spiked).
    """

    kind = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel, threshold: float, *, stride: int = 1,
                 padding: int = 0, leak: float = 1.0, stdp: Stdp | None = None, pointwise_inhibition: bool = True,
                 weight_mean: float = 0.8, weight_std: float = 0.05, homeostasis_plus: float = 0.0,
                 homeostasis_decay: float = 1.0, path: str = "auto", dense_fraction: float = 0.3,
                 seed: int | None = 0, name: str = "conv", in_hw: tuple[int, int] | None = None):
        kh, kw = _pair(kernel)
        if in_channels < 1 or out_channels < 1 or kh < 1 or kw < 1 or stride < 1 or padding < 0:
            raise ValueError(f"{name}: bad geometry in={in_channels} out={out_channels} kernel={kernel} "
                             f"stride={stride} padding={padding}")
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"{name}: leak must be in (0, 1], got {leak}")
        if path not in ("auto", "event", "dense"):
            raise ValueError(f"{name}: path must be auto, event or dense, got {path!r}")
        self.name = name
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel = (kh, kw)
        self.threshold = float(threshold)
        self.stride, self.padding, self.leak = int(stride), int(padding), float(leak)
        self.stdp = stdp or Stdp()
        self.pointwise_inhibition = bool(pointwise_inhibition)
        self.homeostasis_plus, self.homeostasis_decay = float(homeostasis_plus), float(homeostasis_decay)
        self.path, self.dense_fraction = path, float(dense_fraction)
        rng = np.random.default_rng(seed)
        self.weights = np.clip(rng.normal(weight_mean, weight_std, (out_channels, in_channels, kh, kw)),
                               self.stdp.w_lo, self.stdp.w_hi)
        self.a_plus = np.full(out_channels, self.stdp.a_plus)
        self.a_minus = np.full(out_channels, self.stdp.a_minus)
        self.theta_adapt = np.zeros(out_channels)
        self.n_learned = 0
        self.in_hw = None if in_hw is None else _pair(in_hw)
        self.counters = {"samples": 0, "spikes_in": 0, "spikes_out": 0, "inhibited": 0, "winners": 0,
                         "learn_updates": 0, "dense_calls": 0, "event_calls": 0}

    # -- geometry ------------------------------------------------------------------------------
    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        kh, kw = self.kernel
        ho = (h + 2 * self.padding - kh) // self.stride + 1
        wo = (w + 2 * self.padding - kw) // self.stride + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"{self.name}: input {h}x{w} is smaller than kernel {self.kernel} with padding {self.padding}")
        return ho, wo

    def describe(self) -> dict[str, Any]:
        """Geometry for the Loihi emulator and ``spikeflow inspect``."""
        h, w = self.in_hw if self.in_hw else (0, 0)
        ho, wo = self.output_hw(h, w) if self.in_hw else (0, 0)
        return {"name": self.name, "type": "conv", "in_shape": (self.in_channels, h, w),
                "out_shape": (self.out_channels, ho, wo), "kernel": self.kernel, "stride": self.stride,
                "padding": self.padding, "n_weights": int(self.weights.size), "threshold": self.threshold,
                "weight_bits": None}

    # -- spiking phase ---------------------------------------------------------------------------
    def thresholds(self) -> np.ndarray:
        return self.threshold + self.theta_adapt

    def forward(self, times: np.ndarray, time_steps: int, learn: bool = False,
                potentials: bool = True) -> ConvResult:
        """One sample: int32 map (C_in, H, W) -> :class:`ConvResult`; STDP after the spiking phase.

        ``potentials=False`` skips the dense potential maps (``v_final`` is then empty, and
        ``v_first`` too unless learning needs it): the streaming nodes only need spike times."""
        if times.ndim != 3 or times.shape[0] != self.in_channels:
            raise ValueError(f"{self.name}: expected ({self.in_channels}, H, W) input, got {times.shape}")
        if self.in_hw is None:
            self.in_hw = (int(times.shape[1]), int(times.shape[2]))
        self.output_hw(times.shape[1], times.shape[2])
        times = np.ascontiguousarray(times, dtype=np.int32)
        ho, wo = self.output_hw(times.shape[1], times.shape[2])
        ws = self._workspace(ho * wo)
        fraction = {"auto": self.dense_fraction, "event": 2.0, "dense": -1.0}[self.path]
        t_out, v1, vf, n_in, n_out, n_inh, dense = sk.conv_auto(
            times, self.weights, self.thresholds(), self.stride, self.padding, int(time_steps), self.leak,
            self.pointwise_inhibition, 2 if potentials else (1 if learn else 0), fraction, *ws)
        c = self.counters
        c["samples"] += 1
        c["dense_calls" if dense else "event_calls"] += 1
        c["spikes_in"] += int(n_in)
        c["spikes_out"] += int(n_out)
        c["inhibited"] += int(n_inh)
        winners = np.zeros((0, 3), dtype=np.int64)
        if learn:
            winners = self.learn(times, t_out, v1)
        return ConvResult(t_out, v1, vf, winners, int(time_steps), bool(dense))

    def forward_sparse(self, order: np.ndarray, starts: np.ndarray, in_hw: tuple[int, int], time_steps: int,
                       learn: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One sample as a sparse sample in and out (``(order, starts)``, see
        :func:`spikeflow.nodes.snn_kernels.spikes_by_step`): what the streaming nodes run. Same
        spikes, winners and STDP as :meth:`forward` with ``potentials=False``, without building or
        scanning dense maps. Returns ``(order, starts, winners)`` of the output."""
        h, w = int(in_hw[0]), int(in_hw[1])
        if self.in_hw is None:
            self.in_hw = (h, w)
        ho, wo = self.output_hw(h, w)
        T = int(time_steps)
        n_in = int(starts[T])
        fraction = {"auto": self.dense_fraction, "event": 2.0, "dense": -1.0}[self.path]
        if n_in > fraction * self.in_channels * h * w:  # the dense kernel is cheaper: go through the maps
            res = self.forward(sk.sparse_to_times(order, starts, self.in_channels, h, w, T), T, learn=learn,
                               potentials=False)
            o, st = sk.spikes_by_step(res.times, T)
            return o, st, res.winners
        ws = self._sparse_workspace(ho * wo)
        o, st, v1, n_in, n_out, n_inh = sk.conv_event_sparse(
            order, starts, self.in_channels, h, w, self.weights, self.thresholds(), self.stride, self.padding, T,
            self.leak, self.pointwise_inhibition, *ws)
        c = self.counters
        c["samples"] += 1
        c["event_calls"] += 1
        c["spikes_in"] += int(n_in)
        c["spikes_out"] += int(n_out)
        c["inhibited"] += int(n_inh)
        winners = np.zeros((0, 3), dtype=np.int64)
        if learn:
            s = self.stdp
            winners, t_post = sk.k_winners_sparse(o, st, v1, ho, wo, T, s.k, s.radius)
            in_map = self._in_map(h * w)
            sk.sparse_scatter_(in_map, order, starts, T, True)
            n = sk.stdp_post_(self.weights, in_map.reshape(self.in_channels, h, w), winners, t_post, self.a_plus,
                              self.a_minus, self.stride, self.padding, s.stabilize, s.w_lo, s.w_hi)
            sk.sparse_scatter_(in_map, order, starts, T, False)
            fired = None
            if self.homeostasis_plus > 0:
                fired = np.zeros(self.out_channels, dtype=bool)
                fired[np.unique(o // (ho * wo))] = True
            self._schedule(winners, n, fired)
        return o, st, winners

    def _sparse_workspace(self, n_pos: int) -> tuple[np.ndarray, ...]:
        """Buffers of :func:`~spikeflow.nodes.snn_kernels.conv_event_sparse`, kept across samples."""
        ws = getattr(self, "_sws", None)
        if ws is None or ws[0].shape != (n_pos, _padded(self.out_channels)):
            n = n_pos * self.out_channels
            kh, kw = self.kernel
            ws = (self._workspace(n_pos) + (np.full(n_pos, -1, dtype=np.int64),)
                  + sk.prune_workspace(n_pos, self.in_channels, kh, kw)
                  + sk.weight_workspace(self.in_channels, kh, kw, _padded(self.out_channels))
                  + (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int32), np.empty(n)))
            self._sws = ws
        return ws

    def _in_map(self, hw: int) -> np.ndarray:
        """A flat NO_SPIKE int32 map of the input (STDP reads pre-synaptic times from it)."""
        m = getattr(self, "_in_map_buf", None)
        if m is None or m.size != self.in_channels * hw:
            m = np.full(self.in_channels * hw, NO_SPIKE, dtype=np.int32)
            self._in_map_buf = m
        return m

    def _workspace(self, n_pos: int) -> tuple[np.ndarray, ...]:
        """Zeroed buffers of the event-driven kernel, kept across samples (the kernel leaves them
        zero), so a sparse sample costs no dense clearing."""
        ws = getattr(self, "_ws", None)
        c_pad = _padded(self.out_channels)
        if ws is None or ws[0].shape != (n_pos, c_pad):
            ws = (np.zeros((n_pos, c_pad)), np.zeros((n_pos, c_pad), dtype=np.bool_),
                  np.zeros(n_pos, dtype=np.int32), np.zeros(n_pos, dtype=np.int32), np.zeros(n_pos, dtype=np.int32),
                  np.empty(n_pos, dtype=np.int64))
            self._ws = ws
        return ws

    # -- learning phase --------------------------------------------------------------------------
    def learn(self, in_times: np.ndarray, t_out: np.ndarray, v_first: np.ndarray) -> np.ndarray:
        """k-WTA winners, STDP on their weights, then the learning-rate and threshold schedules."""
        s = self.stdp
        winners = sk.k_winners(t_out, v_first, s.k, s.radius)
        n = sk.stdp_(self.weights, in_times, winners, t_out, self.a_plus, self.a_minus, self.stride,
                     self.padding, s.stabilize, s.w_lo, s.w_hi)
        fired = (t_out != NO_SPIKE).any(axis=(1, 2)) if self.homeostasis_plus > 0 else None
        self._schedule(winners, n, fired)
        return winners

    def _schedule(self, winners: np.ndarray, n: int, fired: np.ndarray | None) -> None:
        """After STDP: counters, the learning-rate schedule and the adaptive thresholds."""
        s = self.stdp
        self.counters["winners"] += len(winners)
        self.counters["learn_updates"] += int(n)
        self.n_learned += 1
        if s.double_every > 0 and self.n_learned % s.double_every == 0:
            ratio = s.a_minus / s.a_plus if s.a_plus else 0.0
            self.a_plus = np.minimum(self.a_plus * 2.0, s.a_plus_max)
            self.a_minus = self.a_plus * ratio
        if self.homeostasis_plus > 0:
            self.theta_adapt *= self.homeostasis_decay
            self.theta_adapt[fired] += self.homeostasis_plus

    def convergence(self) -> float:
        """C = Σ w(1−w) / n_w: 0 when every weight has settled at 0 or 1 (paper, eq. 4)."""
        w = self.weights
        return float(np.mean(w * (1.0 - w)))

    def __call__(self, x: np.ndarray, time_steps: int | None = None, learn: bool = False) -> np.ndarray:
        """Any sample form in, the same form out (wave, float time map or int32 time map)."""
        t, T = to_times(x, time_steps)
        return _like_input(x, self.forward(t, T, learn).times, T)

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights.copy(), "a_plus": self.a_plus.copy(), "a_minus": self.a_minus.copy(),
                "theta_adapt": self.theta_adapt.copy(), "n_learned": np.array(self.n_learned, dtype=np.int64)}

    def load_state(self, state: dict[str, np.ndarray], where: str | None = None) -> None:
        """Restore :meth:`state`; ModelError naming ``where``/key on a missing key or wrong shape."""
        check_state(state, self.state(), where or self.name)
        w = np.asarray(state["weights"], dtype=np.float64)
        if w.size and (w.min() < self.stdp.w_lo or w.max() > self.stdp.w_hi or not np.isfinite(w).all()):
            raise ModelError(f"{where or self.name}/weights: values outside [{self.stdp.w_lo}, {self.stdp.w_hi}]")
        self.weights = w.copy()
        self.a_plus = np.asarray(state["a_plus"], dtype=np.float64).copy()
        self.a_minus = np.asarray(state["a_minus"], dtype=np.float64).copy()
        self.theta_adapt = np.asarray(state["theta_adapt"], dtype=np.float64).copy()
        self.n_learned = int(state["n_learned"])

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "convergence": self.convergence(), "a_plus": float(self.a_plus.mean()),
                "a_minus": float(self.a_minus.mean()), "n_learned": self.n_learned,
                "threshold_mean": float(self.thresholds().mean())}


class FirstSpikePool:
    """First-spike pooling: each output keeps the earliest spike of its (kernel × kernel) window
    (max pooling of the cumulative spike-wave). ``stride`` defaults to ``kernel``."""

    kind = "pool"

    def __init__(self, kernel: int, stride: int | None = None, padding: int = 0, *, name: str = "pool",
                 in_shape: tuple[int, int, int] | None = None):
        self.kernel = int(kernel)
        self.stride = self.kernel if stride is None else int(stride)
        self.padding = int(padding)
        if self.kernel < 1 or self.stride < 1 or self.padding < 0 or self.padding >= self.kernel:
            raise ValueError(f"{name}: bad pooling kernel={kernel} stride={stride} padding={padding}")
        self.name = name
        self.in_shape = None if in_shape is None else tuple(int(v) for v in in_shape)
        self.counters = {"samples": 0, "spikes_in": 0, "spikes_out": 0}

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        ho = (h + 2 * self.padding - self.kernel) // self.stride + 1
        wo = (w + 2 * self.padding - self.kernel) // self.stride + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"{self.name}: input {h}x{w} is smaller than the pooling window {self.kernel}")
        return ho, wo

    def describe(self) -> dict[str, Any]:
        c, h, w = self.in_shape or (0, 0, 0)
        ho, wo = self.output_hw(h, w) if self.in_shape else (0, 0)
        return {"name": self.name, "type": "pool", "in_shape": (c, h, w), "out_shape": (c, ho, wo),
                "kernel": (self.kernel, self.kernel), "stride": self.stride, "padding": self.padding,
                "n_weights": 0, "threshold": 0.0, "weight_bits": None}

    def forward(self, times: np.ndarray, time_steps: int) -> np.ndarray:
        if times.ndim != 3:
            raise ValueError(f"{self.name}: expected a (C, H, W) spike-time map, got {times.shape}")
        if self.in_shape is None:
            self.in_shape = tuple(int(v) for v in times.shape)
        self.output_hw(times.shape[1], times.shape[2])
        out, n_in, n_out = sk.first_spike_pool_count(np.ascontiguousarray(times, dtype=np.int32), self.kernel,
                                                     self.stride, self.padding, int(time_steps))
        self.counters["samples"] += 1
        self.counters["spikes_in"] += int(n_in)
        self.counters["spikes_out"] += int(n_out)
        return out

    def forward_sparse(self, order: np.ndarray, starts: np.ndarray, in_shape: tuple[int, int, int],
                       time_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`forward` on a sparse sample ``(order, starts)``, returning one."""
        c, h, w = (int(v) for v in in_shape)
        if self.in_shape is None:
            self.in_shape = (c, h, w)
        ho, wo = self.output_hw(h, w)
        first = getattr(self, "_first", None)
        if first is None or first.size != c * ho * wo:
            first = self._first = np.full(c * ho * wo, NO_SPIKE, dtype=np.int32)
        o, st, n_in, n_out = sk.pool_sparse(order, starts, c, h, w, self.kernel, self.stride, self.padding,
                                            int(time_steps), first)
        self.counters["samples"] += 1
        self.counters["spikes_in"] += int(n_in)
        self.counters["spikes_out"] += int(n_out)
        return o, st

    def __call__(self, x: np.ndarray, time_steps: int | None = None) -> np.ndarray:
        t, T = to_times(x, time_steps)
        return _like_input(x, self.forward(t, T), T)

    def stats(self) -> dict[str, Any]:
        return dict(self.counters)


# -- the layer-by-layer pipeline ---------------------------------------------------------------

@dataclass
class SampleOutput:
    """Every layer's output for one sample: spike-time maps (int32) and conv results by name."""

    input: np.ndarray
    time_steps: int
    times: dict[str, np.ndarray] = field(default_factory=dict)
    conv: dict[str, ConvResult] = field(default_factory=dict)


class Network:
    """encoder → conv1 → pool1 → conv2 → pool2 ... on one sample at a time, trained layer by layer.

    ``encoder`` (optional) maps a raw sample (image, events) to ``(times, T)``; without one,
    samples are spike-waves or spike-time maps. Classifiers build on :meth:`features`.
    """

    def __init__(self, layers: Sequence[SpikingConv | FirstSpikePool],
                 encoder: Callable[[Any], tuple[np.ndarray, int]] | None = None, time_steps: int | None = None):
        names = [layer.name for layer in layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        self.layers = list(layers)
        self.encoder = encoder
        self.time_steps = time_steps

    @classmethod
    def kheradpisheh(cls, in_shape: tuple[int, int, int], encoder=None, time_steps: int | None = 30,
                     conv1: int = 30, conv2: int = 100, kernel1: int = 5, kernel2: int = 5,
                     threshold1: float = 15.0, threshold2: float = 10.0, pool1: int = 2, pool2: int = 2,
                     stdp1: Stdp | None = None, stdp2: Stdp | None = None, seed: int = 0, **conv_kw) -> "Network":
        """The paper's two-layer feature extractor (padding keeps conv maps the input size)."""
        c, h, w = in_shape
        l1 = SpikingConv(c, conv1, kernel1, threshold1, padding=kernel1 // 2, name="conv1", seed=seed,
                         stdp=stdp1 or Stdp(k=5, radius=2), in_hw=(h, w), **conv_kw)
        p1 = FirstSpikePool(pool1, pool1, name="pool1", in_shape=(conv1, h, w))
        h1, w1 = p1.output_hw(h, w)
        l2 = SpikingConv(conv1, conv2, kernel2, threshold2, padding=kernel2 // 2, name="conv2", seed=seed + 1,
                         stdp=stdp2 or Stdp(k=8, radius=1), in_hw=(h1, w1), **conv_kw)
        p2 = FirstSpikePool(pool2, pool2, name="pool2", in_shape=(conv2, h1, w1))
        return cls([l1, p1, l2, p2], encoder=encoder, time_steps=time_steps)

    def layer(self, name: str):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers: {[x.name for x in self.layers]}")

    @property
    def conv_layers(self) -> list[SpikingConv]:
        return [x for x in self.layers if isinstance(x, SpikingConv)]

    def encode(self, sample: Any) -> tuple[np.ndarray, int]:
        """Raw sample -> (int32 spike-time map, T). A ``(times, T)`` tuple passes through (cache
        encoded samples that way); otherwise the encoder, else :func:`to_times`."""
        if isinstance(sample, tuple) and len(sample) == 2:
            t, T = sample
            return to_times(t, int(T))
        if self.encoder is not None:
            return self.encoder(sample)
        x = np.asarray(sample)
        return to_times(x, self.time_steps if x.ndim == 3 else None)

    def forward(self, sample: Any, learn_layer: str | None = None, upto: str | None = None,
                potentials: bool = False) -> SampleOutput:
        """Run the layers in order (stop after ``upto``); STDP only on ``learn_layer``;
        ``potentials`` also keeps every conv layer's potential maps (v_first, v_final)."""
        t, T = self.encode(sample)
        out = SampleOutput(input=t, time_steps=T)
        for layer in self.layers:
            if isinstance(layer, SpikingConv):
                res = layer.forward(t, T, learn=layer.name == learn_layer, potentials=potentials)
                out.conv[layer.name] = res
                t = res.times
            else:
                t = layer.forward(t, T)
            out.times[layer.name] = t
            if layer.name in (upto, learn_layer):
                break
        return out

    def train_layer(self, samples, layer: str, epochs: int = 1, callback: Callable[[int, float], None] | None = None) -> list[float]:
        """Unsupervised STDP on one conv layer (earlier layers frozen). Returns C after each epoch."""
        conv = self.layer(layer)
        if not isinstance(conv, SpikingConv):
            raise ValueError(f"{layer!r} is not a conv layer")
        history = []
        for epoch in range(epochs):
            for sample in samples:
                self.forward(sample, learn_layer=layer)
            history.append(conv.convergence())
            if callback is not None:
                callback(epoch, history[-1])
        return history

    def features(self, sample: Any, grid: tuple[int, int] = (1, 1), kind: str = "spikes",
                 layer: str | None = None) -> np.ndarray:
        """A fixed-length vector for a readout, per feature map and spatial grid cell.

        ``kind``: "spikes" (spike count of the last layer, or ``layer``), "first" (earliest spike
        as (T − t)/T, 0 when silent), "potential" (max final potential of the last conv layer).
        """
        out = self.forward(sample, potentials=kind == "potential")
        T = out.time_steps
        if kind == "potential":
            name = layer or self.conv_layers[-1].name
            if name not in out.conv:
                raise ValueError(f"layer {name!r} is not a conv layer")
            maps = out.conv[name].v_final
            return grid_reduce(maps, grid, np.max)
        name = layer or self.layers[-1].name
        t = out.times[name]
        if kind == "spikes":
            return grid_reduce((t != NO_SPIKE).astype(np.float64), grid, np.sum)
        if kind == "first":
            val = np.where(t != NO_SPIKE, (T - t.astype(np.float64)) / T, 0.0)
            return grid_reduce(val, grid, np.max)
        raise ValueError(f"unknown feature kind {kind!r}; expected spikes, first or potential")

    def describe(self) -> list[dict[str, Any]]:
        return [layer.describe() for layer in self.layers]

    def state(self) -> dict[str, dict[str, np.ndarray]]:
        return {x.name: x.state() for x in self.conv_layers}

    def save(self, path, metadata: dict[str, Any] | None = None):
        """Weights and schedules of every conv layer plus the geometry of all layers (npz)."""
        return save_state(path, self.state(), {"layers": self.describe(), **(metadata or {})})

    def load(self, path) -> dict[str, Any]:
        """Restore :meth:`save`; ModelError naming the file and key on any mismatch."""
        layers, meta = load_state(path)
        for conv in self.conv_layers:
            if conv.name not in layers:
                raise ModelError(f"{path}: key {conv.name}/weights missing; file has layers {sorted(layers)}")
            conv.load_state(layers[conv.name], where=f"{path}: {conv.name}")
        return meta


def grid_reduce(maps: np.ndarray, grid: tuple[int, int], reduce) -> np.ndarray:
    """(C, H, W) -> (C·gy·gx,) map-major, each cell reduced (cells split H and W evenly)."""
    c, h, w = maps.shape
    gy, gx = grid
    ys = np.linspace(0, h, gy + 1).astype(int)
    xs = np.linspace(0, w, gx + 1).astype(int)
    out = np.zeros((c, gy, gx))
    for i in range(gy):
        for j in range(gx):
            cell = maps[:, ys[i]:max(ys[i + 1], ys[i] + 1), xs[j]:max(xs[j + 1], xs[j] + 1)]
            out[:, i, j] = reduce(cell, axis=(1, 2)) if cell.size else 0.0
    return out.ravel()


# -- graph nodes -------------------------------------------------------------------------------

def _sample_timing(packet: Packet, time_steps: int, step_us: int) -> tuple[int, int, int]:
    """(T, step_us, t_start_us) of a spikes packet: from its ``data`` (set by encoders and layers),
    else the node's parameters and the packet window."""
    d = packet.data or {}
    T = int(d.get("time_steps", time_steps))
    step = int(d.get("step_us", step_us or max(1, (packet.t1_us - packet.t0_us) // max(T, 1))))
    t0 = int(d.get("t_start_us", packet.t0_us))
    return T, max(step, 1), t0


class _SpikingNode(Node):
    inputs: ClassVar[dict[str, str]] = {"spikes_in": "spikes"}
    outputs: ClassVar[dict[str, str]] = {"spikes_out": "spikes"}

    layer: Any

    def _input_shape(self, meta: dict[str, PortMeta]) -> tuple[int, int, int]:
        """(C, H, W) of the ``spikes_in`` port; a GraphError when the port is not connected."""
        m = meta.get("spikes_in")
        if m is None:
            raise GraphError(f"nodes.{self.name}.inputs", f"{self.type_name} needs a spikes_in input")
        w, h, c = m.sensor_size
        self._in_shape = (int(c), int(h), int(w))
        return self._in_shape

    def _emit(self, packet: Packet, sample: tuple[np.ndarray, np.ndarray], shape: tuple[int, int, int], step: int,
              t0: int, extra=None) -> dict:
        ev = events_from_sparse(sample[0], sample[1], shape, t0, step)
        c, h, w = shape
        T = len(sample[1]) - 1
        out = Packet(kind="spikes", stream=f"{self.name}.spikes_out", seq=self._seq, sensor_size=SensorSize(w, h, c),
                     t0_us=packet.t0_us, t1_us=packet.t1_us, sent_ns=packet.sent_ns, events=ev,
                     data={"layer": self.name, "time_steps": T, "step_us": step, "t_start_us": t0, **(extra or {})})
        self._seq += 1
        return {"spikes_out": [out]}

    def _input_sparse(self, packet: Packet):
        """The packet's spikes as a sparse sample (no dense map; a reused dedup buffer)."""
        T, step, t0 = _sample_timing(packet, self.params.time_steps, self.params.step_us)
        ev = packet.events if packet.events is not None else np.zeros(0, EVENT_DTYPE)
        buf = getattr(self, "_first_buf", None)
        if buf is None or buf.size != int(np.prod(self._in_shape)):
            buf = self._first_buf = np.full(int(np.prod(self._in_shape)), NO_SPIKE, dtype=np.int32)
        order, starts = sparse_from_packet(ev, self._in_shape, t0, step, T, buf)
        return order, starts, T, step, t0

    def _warm(self, dense: bool) -> None:
        """Load the layer's kernels now (see :mod:`spikeflow.nodes.warm`): a sample with one
        spike and, for a layer with a dense path, one where every input neuron spikes."""
        c, h, w = self._in_shape
        data = {"time_steps": 1, "step_us": 1, "t_start_us": 0}
        samples = [every_pixel((1, 1, 1))] + ([every_pixel(self._in_shape)] if dense else [])
        probes = [Packet("spikes", "warm", 0, SensorSize(w, h, c), 0, 1, 0, ev, dict(data)) for ev in samples]
        warm_kernels(self, "spikes_in", probes)

    def describe(self) -> dict[str, Any]:
        d = self.layer.describe()
        d["name"] = self.name
        return d


@dataclass(frozen=True)
class SpikingConvParams:
    out_channels: int = param(30, "number of feature maps (C_out)", min=1, max=32767)
    kernel: int = param(5, "square kernel size (kh = kw)", min=1, max=63)
    threshold: float = param(15.0, "firing threshold θ of the IF neurons", min=0.0)
    stride: int = param(1, "convolution stride", min=1, max=16)
    padding: int = param(2, "zero padding on each side", min=0, max=31)
    leak: float = param(1.0, "potential kept per time step: 1 = IF, < 1 = LIF", min=1e-6, max=1.0)
    pointwise_inhibition: bool = param(True, "keep only the earliest feature per position")
    learn: bool = param(False, "run k-WTA + STDP after each sample (live learning)")
    a_plus: float = param(0.004, "STDP potentiation rate a⁺", min=0.0, max=1.0)
    a_minus: float = param(-0.003, "STDP depression rate a⁻ (negative)", min=-1.0, max=0.0)
    a_plus_max: float = param(0.15, "cap of a⁺ under the doubling schedule", min=0.0, max=1.0)
    double_every: int = param(500, "double a⁺ (a⁻ follows) every N learned samples; 0 = never", min=0)
    k_winners: int = param(5, "winners per sample for STDP (k-WTA)", min=1, max=1024)
    inhibition_radius: int = param(2, "no two winners within this Chebyshev distance", min=0, max=1024)
    homeostasis_plus: float = param(0.0, "adaptive threshold increment per firing (0 = off)", min=0.0)
    homeostasis_decay: float = param(1.0, "adaptive threshold decay per learned sample", min=0.0, max=1.0)
    weight_mean: float = param(0.8, "initial weights ~ N(mean, std)", min=0.0, max=1.0)
    weight_std: float = param(0.05, "initial weight spread", min=0.0, max=1.0)
    seed: int = param(0, "seed of the initial weights", min=0)
    path: str = param("auto", "integration path", choices=("auto", "event", "dense"))
    dense_fraction: float = param(0.3, "auto path: dense when more than this fraction of inputs spiked", min=0.0, max=1.0)
    time_steps: int = param(30, "T when the packet does not say", min=1, max=100000)
    step_us: int = param(0, "µs per time step when the packet does not say (0 = window / T)", min=0)


@register
class SpikingConvNode(_SpikingNode):
    """``snn_conv``: one spikes packet (= one sample) in, the layer's spikes out; STDP if ``learn``."""

    type_name = "snn_conv"
    Params = SpikingConvParams

    def setup(self, meta: dict[str, PortMeta]) -> dict[str, PortMeta]:
        c, h, w = self._input_shape(meta)
        p = self.params
        stdp = Stdp(a_plus=p.a_plus, a_minus=p.a_minus, a_plus_max=p.a_plus_max, double_every=p.double_every,
                    k=p.k_winners, radius=p.inhibition_radius)
        try:
            self.layer = SpikingConv(int(c), p.out_channels, p.kernel, p.threshold, stride=p.stride, padding=p.padding,
                                     leak=p.leak, stdp=stdp, pointwise_inhibition=p.pointwise_inhibition,
                                     weight_mean=p.weight_mean, weight_std=p.weight_std,
                                     homeostasis_plus=p.homeostasis_plus, homeostasis_decay=p.homeostasis_decay,
                                     path=p.path, dense_fraction=p.dense_fraction, seed=p.seed, name=self.name,
                                     in_hw=(int(h), int(w)))
            ho, wo = self.layer.output_hw(int(h), int(w))
        except ValueError as e:
            raise GraphError(f"nodes.{self.name}.params", str(e)) from None
        self._seq = 0
        self._out_shape = (p.out_channels, ho, wo)
        self._warm(dense=p.path != "event")
        return {"spikes_out": PortMeta("spikes", SensorSize(wo, ho, p.out_channels))}

    def process(self, port: str, packet: Packet):
        order, starts, T, step, t0 = self._input_sparse(packet)
        c, h, w = self._in_shape
        learn = self.params.learn
        o, st, winners = self.layer.forward_sparse(order, starts, (h, w), T, learn=learn)
        return self._emit(packet, (o, st), self._out_shape, step, t0, {"winners": winners.tolist()} if learn else None)

    def configure(self, **changes: Any) -> None:
        super().configure(**changes)  # e.g. learn on/off live; geometry changes need a rebuild
        if hasattr(self, "layer"):
            p = self.params
            self.layer.threshold, self.layer.leak = p.threshold, p.leak
            self.layer.path, self.layer.dense_fraction = p.path, p.dense_fraction
            self.layer.stdp = dataclasses.replace(self.layer.stdp, k=p.k_winners, radius=p.inhibition_radius)

    def state(self) -> dict[str, np.ndarray]:
        return self.layer.state()

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.layer.load_state(state, where=self.name)

    def stats(self) -> dict[str, Any]:
        return self.layer.stats()


@dataclass(frozen=True)
class FirstSpikePoolParams:
    kernel: int = param(2, "pooling window (square)", min=1, max=64)
    stride: int = param(0, "stride; 0 = kernel", min=0, max=64)
    padding: int = param(0, "zero padding (never spikes)", min=0, max=63)
    time_steps: int = param(30, "T when the packet does not say", min=1, max=100000)
    step_us: int = param(0, "µs per time step when the packet does not say (0 = window / T)", min=0)


@register
class FirstSpikePoolNode(_SpikingNode):
    """``snn_pool``: first-spike pooling of each sample."""

    type_name = "snn_pool"
    Params = FirstSpikePoolParams

    def setup(self, meta: dict[str, PortMeta]) -> dict[str, PortMeta]:
        c, h, w = self._input_shape(meta)
        p = self.params
        try:
            self.layer = FirstSpikePool(p.kernel, p.stride or None, p.padding, name=self.name, in_shape=self._in_shape)
            ho, wo = self.layer.output_hw(int(h), int(w))
        except ValueError as e:
            raise GraphError(f"nodes.{self.name}.params", str(e)) from None
        self._seq = 0
        self._out_shape = (int(c), ho, wo)
        self._warm(dense=False)
        return {"spikes_out": PortMeta("spikes", SensorSize(wo, ho, int(c)))}

    def process(self, port: str, packet: Packet):
        order, starts, T, step, t0 = self._input_sparse(packet)
        return self._emit(packet, self.layer.forward_sparse(order, starts, self._in_shape, T), self._out_shape, step, t0)

    def stats(self) -> dict[str, Any]:
        return self.layer.stats()
