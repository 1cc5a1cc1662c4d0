"""Encoders: from images or DVS events to first-spike samples for the spiking layers.

* DoG on/off + intensity-to-latency (Kheradpisheh et al. 2018; SpykeTorch's ``DoGKernel``,
  ``Filter`` and ``Intensity2Latency``): a 2-D intensity map is filtered by an on-centre and an
  off-centre difference of Gaussians (zero mean, divided by the maximum), responses at or below
  ``threshold`` are dropped, and the rest are rank-ordered into T time steps (strongest first,
  equal-count bins). Output: int32 spike-time map (2, H, W), channel 0 = on, 1 = off.
* For events, the intensity map of each window is the event count per pixel or an exponentially
  decaying time surface; the ``dog_encoder`` node does this per window with a stride.
* ``polarity_encoder``: the sensor's OFF/ON events are already on/off channels; each pixel's first
  event in the window (optionally downsampled) spikes at step (t − window start) // step_us.

Static frames go through :func:`encode_image` (or :class:`ImageEncoder` for a ``Network``), so the
paper's MNIST / ETH-80 pipeline runs through the same kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from spikeflow.nodes import encoder_kernels as ek
from spikeflow.nodes.base import Node, PortMeta, param
from spikeflow.nodes.snn import NO_SPIKE, events_from_sparse, events_from_times
from spikeflow.nodes.snn_kernels import sparse_from_fields, times_from_events
from spikeflow.nodes.warm import every_pixel, warm_kernels
from spikeflow.service.errors import GraphError, ParamError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, as_events
from spikeflow.service.packet import Packet
from spikeflow.service.registry import register


# -- plain functions ----------------------------------------------------------------------------

def dog_kernel(size: int = 7, sigma1: float = 1.0, sigma2: float = 2.0) -> np.ndarray:
    """Difference of Gaussians (1/2π)(e^{−r²/2σ1²}/σ1² − e^{−r²/2σ2²}/σ2²) on a size×size window,
    made zero-mean and divided by its maximum. σ1 < σ2 gives on-centre, σ1 > σ2 off-centre."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"DoG window must be odd and >= 1, got {size}")
    if sigma1 <= 0 or sigma2 <= 0 or sigma1 == sigma2:
        raise ValueError(f"DoG sigmas must be positive and different, got {sigma1}, {sigma2}")
    r = size // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    d2 = (xx * xx + yy * yy).astype(np.float64)
    g1 = np.exp(-0.5 * d2 / sigma1 ** 2) / sigma1 ** 2
    g2 = np.exp(-0.5 * d2 / sigma2 ** 2) / sigma2 ** 2
    k = (g1 - g2) / (2.0 * math.pi)
    k -= k.mean()
    peak = k.max()
    if peak <= 0:
        raise ValueError(f"DoG({size}, {sigma1}, {sigma2}) has no positive lobe")
    return k / peak


def dog_bank(size: int = 7, sigma1: float = 1.0, sigma2: float = 2.0) -> np.ndarray:
    """The on/off pair (2, size, size): DoG(σ1, σ2) and DoG(σ2, σ1)."""
    return np.stack([dog_kernel(size, sigma1, sigma2), dog_kernel(size, sigma2, sigma1)])


def dog_latency(intensity: np.ndarray, time_steps: int = 30, kernels: np.ndarray | None = None,
                threshold: float = 0.0, normalization_radius: int = 0) -> np.ndarray:
    """2-D intensity map -> int32 spike-time map (K, H, W): DoG filter, keep > threshold,
    optional local normalisation (radius), rank-order latency into T steps."""
    img = np.ascontiguousarray(intensity, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D intensity map, got shape {img.shape}")
    if time_steps < 1:
        raise ValueError(f"time_steps must be >= 1, got {time_steps}")
    k = dog_bank() if kernels is None else np.ascontiguousarray(kernels, dtype=np.float64)
    resp = ek.filter2d(img, k)
    # a zero-mean kernel on a uniform patch gives rounding noise (~1e-16 of the input): not a response
    noise = 1e-9 * float(np.abs(img).max(initial=0.0)) * float(np.abs(k).sum())
    resp[resp <= max(threshold, noise)] = 0.0
    if normalization_radius > 0:
        resp = ek.local_normalize(resp, int(normalization_radius), 1e-12)
    return ek.rank_latency(resp, int(time_steps), 0.0)


def encode_image(image: np.ndarray, time_steps: int = 30, size: int = 7, sigma1: float = 1.0, sigma2: float = 2.0,
                 threshold: float = 0.0, normalization_radius: int = 0) -> tuple[np.ndarray, int]:
    """A static frame (H, W) gray or (H, W, 3) colour, any numeric dtype -> ``(times, T)``."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[..., :3].astype(np.float64).mean(axis=2)
    return dog_latency(img, time_steps, dog_bank(size, sigma1, sigma2), threshold, normalization_radius), time_steps


def event_map(events: np.ndarray, height: int, width: int, mode: str = "count", t_ref_us: int | None = None,
              tau_us: float = 10_000.0, downsample: int = 1) -> np.ndarray:
    """Events of one window -> 2-D intensity map: ``count`` per pixel or ``time_surface``
    exp(−(t_ref − t_last)/τ); ``height``/``width`` are of the downsampled grid."""
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    if mode == "count":
        return ek.count_map(x, y, height, width, downsample)
    if mode == "time_surface":
        t = events["t"].astype(np.int64)
        ref = int(t.max()) if t_ref_us is None and len(t) else int(t_ref_us or 0)
        return ek.time_surface(t, x, y, height, width, ref, float(tau_us), downsample)
    raise ValueError(f"unknown map mode {mode!r}; expected count or time_surface")


def polarity_times(events: np.ndarray, n_channels: int, height: int, width: int, t_start_us: int, step_us: int,
                   time_steps: int, downsample: int = 1) -> np.ndarray:
    """Events of one window -> int32 (C, H, W): first event per (polarity, pixel) at step
    (t − t_start) // step_us; events at or beyond step T are dropped."""
    step = (events["t"].astype(np.int64) - t_start_us) // step_us
    return times_from_events(events["p"].astype(np.int64), events["y"].astype(np.int64) // downsample,
                             events["x"].astype(np.int64) // downsample, step, n_channels, height, width,
                             time_steps)


@dataclass
class ImageEncoder:
    """Callable for ``Network(encoder=...)``: image -> (times, T) through :func:`encode_image`."""

    time_steps: int = 30
    size: int = 7
    sigma1: float = 1.0
    sigma2: float = 2.0
    threshold: float = 0.0
    normalization_radius: int = 0

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        return encode_image(image, self.time_steps, self.size, self.sigma1, self.sigma2, self.threshold,
                            self.normalization_radius)


@dataclass
class EventEncoder:
    """Callable for ``Network(encoder=...)``: a whole event array (one sample) -> (times, T).

    ``mode``: "polarity" (2 channels from the sensor polarity) or "dog" (DoG on/off of the
    ``map`` of the events: "count" or "time_surface")."""

    sensor_size: tuple[int, int, int]
    mode: str = "polarity"
    time_steps: int = 30
    downsample: int = 1
    map: str = "count"
    tau_us: float = 10_000.0
    size: int = 7
    sigma1: float = 1.0
    sigma2: float = 2.0
    threshold: float = 0.0

    def __call__(self, events: np.ndarray) -> tuple[np.ndarray, int]:
        w, h, c = self.sensor_size
        hd, wd = h // self.downsample, w // self.downsample
        if self.mode == "polarity":
            if len(events) == 0:
                return np.full((c, hd, wd), NO_SPIKE, dtype=np.int32), self.time_steps
            t0 = int(events["t"].min())
            span = int(events["t"].max()) - t0 + 1
            step = max(1, -(-span // self.time_steps))
            return polarity_times(events, c, hd, wd, t0, step, self.time_steps, self.downsample), self.time_steps
        if self.mode == "dog":
            m = event_map(events, hd, wd, self.map, None, self.tau_us, self.downsample)
            return dog_latency(m, self.time_steps, dog_bank(self.size, self.sigma1, self.sigma2), self.threshold), self.time_steps
        raise ValueError(f"unknown encoder mode {self.mode!r}; expected polarity or dog")


# -- windowing ---------------------------------------------------------------------------------

class _Windows:
    """Cuts a stream of sorted event packets into windows [ws, ws + window) every ``stride``.

    A window is complete once a packet's ``t1_us`` reaches its end; empty stretches are skipped
    in O(1). Events older than the next window start are dropped from the buffer.

    The buffer is preallocated and reused: each packet is appended in place (one kernel call that
    also checks its order) next to a contiguous timestamp column that the binary searches use,
    and consumed events are dropped by moving a start index. Windows are views of the buffer,
    valid until the next ``push`` (the encoder consumes them at once). Appending by
    concatenation instead copied the whole pending window at every packet: with 1 ms packets
    and 50 ms windows, 25 copies of every event.
    """

    def __init__(self, window_us: int, stride_us: int, capacity: int = 4096):
        self.window, self.stride = int(window_us), int(stride_us)
        self.ws: int | None = None
        self._buf = np.empty(capacity, EVENT_DTYPE)
        self._t = np.empty(capacity, np.int64)
        self._lo = self._n = 0  # live events: [lo, n)
        self._ordered = True    # the live timestamps never go backwards
        probe = np.zeros(1, EVENT_DTYPE)  # load the kernel now, not at the first packet
        ek.append_events_(self._buf, self._t, 0, 0, probe)
        probe.setflags(write=False)       # (and for read-only packets, zero-copy off a socket)
        ek.append_events_(self._buf, self._t, 0, 0, probe)

    @property
    def buf(self) -> np.ndarray:
        """The pending events (a view)."""
        return self._buf[self._lo:self._n]

    def _reserve(self, m: int) -> None:
        """Room for ``m`` more events after the live ones: shift them to the front, or grow."""
        if self._n + m <= len(self._buf):
            return
        live = self._n - self._lo
        if live + m > len(self._buf) // 2:
            cap = max(2 * len(self._buf), live + m)
            buf, t = np.empty(cap, EVENT_DTYPE), np.empty(cap, np.int64)
        else:
            buf, t = self._buf, self._t
        buf[:live] = self._buf[self._lo:self._n]  # (overlapping moves are safe in numpy)
        t[:live] = self._t[self._lo:self._n]
        self._buf, self._t, self._lo, self._n = buf, t, 0, live

    def push(self, events: np.ndarray, t0_us: int, t1_us: int) -> list[tuple[int, np.ndarray]]:
        if self.ws is None:
            self.ws = int(t0_us) if t1_us > t0_us or not len(events) else int(events["t"][0])
        m = len(events)
        if m:
            if events.dtype != EVENT_DTYPE:
                events = as_events(events)
            self._reserve(m)
            order = ek.append_events_(self._buf, self._t, self._lo, self._n, events)
            if order == 0:
                events = np.sort(events, order="t", kind="stable")
                order = ek.append_events_(self._buf, self._t, self._lo, self._n, events)
            self._ordered = order == 2 and (self._ordered or self._lo == self._n)
            self._n += m
        horizon = max(int(t1_us), int(self._t[self._n - 1]) + 1 if m else 0)
        return self._cut(horizon)

    def _cut(self, horizon: int) -> list[tuple[int, np.ndarray]]:
        out = []
        lo = self._lo
        t = self._t[lo:self._n]
        while self.ws + self.window <= horizon:
            first = int(np.searchsorted(t, self.ws)) if len(t) else 0
            if first >= len(t):  # nothing left: jump to the last window start before horizon
                k = (horizon - self.window - self.ws) // self.stride + 1
                self.ws += max(1, k) * self.stride
                break
            t_first = int(t[first])
            if t_first >= self.ws + self.window:  # skip empty windows
                self.ws += ((t_first - self.ws - self.window) // self.stride + 1) * self.stride
                continue
            # = time_slice(buffer, ws, ws + window), reusing the search for its start
            out.append((self.ws, self._buf[lo + first:lo + int(np.searchsorted(t, self.ws + self.window))]))
            self.ws += self.stride
        # drop what no later window can hold; on an ordered buffer starting at or after ws, nothing
        if len(t) and not (self._ordered and t[0] >= self.ws):
            self._lo = lo + int(np.searchsorted(t, self.ws))
        if self._lo == self._n:
            self._lo = self._n = 0
            self._ordered = True
        return out

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """Partial windows that still hold events (end of stream)."""
        if self.ws is None or self._n == self._lo:
            return []
        return self._cut(int(self._t[self._n - 1]) + self.window)


# -- graph nodes ---------------------------------------------------------------------------------

class _WindowEncoder(Node):
    inputs: ClassVar[dict[str, str]] = {"events_in": "events"}
    outputs: ClassVar[dict[str, str]] = {"spikes_out": "spikes"}

    def _setup_windows(self, meta: dict[str, PortMeta]) -> SensorSize:
        m = meta.get("events_in")
        if m is None:
            raise GraphError(f"nodes.{self.name}.inputs", f"{self.type_name} needs an events_in input")
        p = self.params
        stride = p.stride_us or p.window_us
        if stride > p.window_us:
            raise ParamError(f"nodes.{self.name}.params.stride_us", f"must be <= window_us ({p.window_us}), got {stride}")
        self._step_us = p.step_us or max(1, -(-p.window_us // p.time_steps))
        self._win = _Windows(p.window_us, stride)
        self._seq = 0
        self._sent_ns = 0
        self.counters = {"windows": 0, "events_in": 0, "spikes_out": 0, "empty_windows": 0}
        w, h, c = m.sensor_size
        if w <= 0 or h <= 0:
            raise GraphError(f"nodes.{self.name}.inputs", f"input sensor size {tuple(m.sensor_size)} is unknown")
        self._sensor = SensorSize(int(w), int(h), int(c))
        ds = p.downsample
        return SensorSize(int(w) // ds, int(h) // ds, 2)

    def _warm(self) -> None:
        """Load the encoding kernels now (see :mod:`spikeflow.nodes.warm`): one event per
        pixel and polarity, in a packet that closes a window."""
        s, p = self._sensor, self.params
        ev = every_pixel((min(s.channels, 2) or 1, s.height, s.width))
        warm_kernels(self, "events_in", [Packet("events", "warm", 0, s, 0, 2 * p.window_us, 0, ev)])

    def process(self, port: str, packet: Packet):
        ev = packet.events if packet.events is not None else np.zeros(0, EVENT_DTYPE)
        self.counters["events_in"] += len(ev)
        self._sent_ns = packet.sent_ns
        return self._emit(self._win.push(ev, packet.t0_us, packet.t1_us))

    def flush(self):
        return self._emit(self._win.flush())

    def _emit(self, windows) -> dict:
        out = []
        for ws, ev in windows:
            if len(ev) < self.params.min_events:
                self.counters["empty_windows"] += 1
                continue
            if hasattr(self, "_encode_sparse"):  # no dense map: spikes straight from the events
                (order, starts), (c, h, w) = self._encode_sparse(ev, ws)
                spikes = events_from_sparse(order, starts, (c, h, w), ws, self._step_us)
            else:
                times = self._encode(ev, ws)
                spikes = events_from_times(times, ws, self._step_us, self.params.time_steps)
                c, h, w = times.shape
            out.append(Packet(kind="spikes", stream=f"{self.name}.spikes_out", seq=self._seq,
                              sensor_size=SensorSize(w, h, c), t0_us=ws, t1_us=ws + self.params.window_us,
                              sent_ns=self._sent_ns, events=spikes,
                              data={"layer": self.name, "time_steps": self.params.time_steps,
                                    "step_us": self._step_us, "t_start_us": ws, "n_events": int(len(ev))}))
            self._seq += 1
            self.counters["windows"] += 1
            self.counters["spikes_out"] += len(spikes)
        return {"spikes_out": out} if out else {}

    def stats(self) -> dict[str, Any]:
        return dict(self.counters)


@dataclass(frozen=True)
class DogEncoderParams:
    window_us: int = param(50_000, "window length (µs, sensor clock)", min=1)
    stride_us: int = param(0, "window start every N µs; 0 = window_us (no overlap)", min=0)
    time_steps: int = param(30, "T: latency steps per window", min=1, max=100000)
    step_us: int = param(0, "µs per time step in the output timestamps; 0 = ceil(window / T)", min=0)
    map: str = param("count", "intensity map of a window", choices=("count", "time_surface"))
    tau_us: float = param(10_000.0, "time-surface decay constant (µs)", min=1e-3)
    kernel_size: int = param(7, "DoG window (odd)", min=1, max=63)
    sigma1: float = param(1.0, "DoG centre σ (on-centre: σ1 < σ2)", min=1e-3)
    sigma2: float = param(2.0, "DoG surround σ", min=1e-3)
    threshold: float = param(0.0, "DoG responses at or below this are silent", min=0.0)
    normalization_radius: int = param(0, "local normalisation radius (0 = off)", min=0, max=64)
    downsample: int = param(1, "integer spatial downsampling of the event map", min=1, max=64)
    min_events: int = param(1, "skip windows with fewer events", min=0)


@register
class DogEncoder(_WindowEncoder):
    """``dog_encoder``: events per window -> count / time-surface map -> DoG on/off -> rank-order
    latency spikes (p = 0 on, 1 off; t = window start + step · step_us)."""

    type_name = "dog_encoder"
    Params = DogEncoderParams

    def setup(self, meta: dict[str, PortMeta]) -> dict[str, PortMeta]:
        out = self._setup_windows(meta)
        p = self.params
        try:
            self._kernels = dog_bank(p.kernel_size, p.sigma1, p.sigma2)
        except ValueError as e:
            raise ParamError(f"nodes.{self.name}.params.kernel_size", str(e)) from None
        self._warm()
        return {"spikes_out": PortMeta("spikes", out)}

    def _encode(self, ev: np.ndarray, ws: int) -> np.ndarray:
        p = self.params
        h, w = self._sensor.height // p.downsample, self._sensor.width // p.downsample
        m = event_map(ev, h, w, p.map, ws + p.window_us, p.tau_us, p.downsample)
        return dog_latency(m, p.time_steps, self._kernels, p.threshold, p.normalization_radius)

    def describe(self) -> dict[str, Any]:
        p = self.params
        h, w = self._sensor.height, self._sensor.width
        return {"name": self.name, "type": "input", "in_shape": (1, h // p.downsample, w // p.downsample),
                "out_shape": (2, h // p.downsample, w // p.downsample), "kernel": (p.kernel_size, p.kernel_size),
                "stride": 1, "padding": p.kernel_size // 2, "n_weights": int(self._kernels.size),
                "threshold": float(p.threshold), "weight_bits": None}


@dataclass(frozen=True)
class PolarityEncoderParams:
    window_us: int = param(50_000, "window length (µs, sensor clock)", min=1)
    stride_us: int = param(0, "window start every N µs; 0 = window_us (no overlap)", min=0)
    time_steps: int = param(30, "T: time steps per window", min=1, max=100000)
    step_us: int = param(0, "µs per time step; 0 = ceil(window / T) so the window fills T steps", min=0)
    downsample: int = param(1, "integer spatial downsampling (pixels pooled, earliest event wins)", min=1, max=64)
    min_events: int = param(1, "skip windows with fewer events", min=0)


@register
class PolarityEncoder(_WindowEncoder):
    """``polarity_encoder``: OFF/ON events as channels 0/1, first event per pixel per window."""

    type_name = "polarity_encoder"
    Params = PolarityEncoderParams

    def setup(self, meta: dict[str, PortMeta]) -> dict[str, PortMeta]:
        out = self._setup_windows(meta)
        self._warm()
        return {"spikes_out": PortMeta("spikes", out)}

    def _encode(self, ev: np.ndarray, ws: int) -> np.ndarray:
        p = self.params
        h, w = self._sensor.height // p.downsample, self._sensor.width // p.downsample
        return polarity_times(ev, 2, h, w, ws, self._step_us, p.time_steps, p.downsample)

    def _encode_sparse(self, ev: np.ndarray, ws: int):
        """:meth:`_encode` as a sparse sample (same spikes): ``((order, starts), (2, H, W))``."""
        p = self.params
        h, w = self._sensor.height // p.downsample, self._sensor.width // p.downsample
        first = getattr(self, "_first_buf", None)
        if first is None or first.size != 2 * h * w:
            first = self._first_buf = np.full(2 * h * w, NO_SPIKE, dtype=np.int32)
        sample = sparse_from_fields(ev["t"], ev["p"], ev["y"], ev["x"], int(ws), int(self._step_us), int(p.downsample),
                                    2, h, w, int(p.time_steps), first)
        return sample, (2, h, w)

    def describe(self) -> dict[str, Any]:
        p = self.params
        h, w = self._sensor.height // p.downsample, self._sensor.width // p.downsample
        return {"name": self.name, "type": "input", "in_shape": (2, self._sensor.height, self._sensor.width),
                "out_shape": (2, h, w), "kernel": (p.downsample, p.downsample), "stride": p.downsample,
                "padding": 0, "n_weights": 0, "threshold": 0.0, "weight_bits": None}
