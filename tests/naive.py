"""Slow, obviously-correct numpy twins of the numba kernels (encoder_kernels, snn_kernels).

They work on the representation the papers use, SpykeTorch's cumulative spike-wave
(T, C, H, W), and follow each definition literally, so a mismatch points at the fast kernel.
Also used by bench/bench_snn.py as the reference implementation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

NO_SPIKE = 2147483647


# -- representation ------------------------------------------------------------------------

def wave_from_times(times: np.ndarray, time_steps: int) -> np.ndarray:
    """Cumulative spike-wave (T, C, H, W) of a spike-time map: wave[t] = (times <= t)."""
    t = np.arange(time_steps).reshape(-1, 1, 1, 1)
    return (times[None] <= t).astype(np.float64)


def times_from_wave(wave: np.ndarray) -> np.ndarray:
    """First step at which each neuron is on in a cumulative wave, NO_SPIKE if never."""
    on = wave > 0
    first = np.argmax(on, axis=0).astype(np.int64)
    first[~on.any(axis=0)] = NO_SPIKE
    return first.astype(np.int32)


def times_from_events(c, y, x, step, n_channels, height, width, time_steps):
    out = np.full((n_channels, height, width), NO_SPIKE, dtype=np.int32)
    for ci, yi, xi, s in zip(c, y, x, step):
        if 0 <= s < time_steps and 0 <= ci < n_channels and 0 <= yi < height and 0 <= xi < width:
            out[ci, yi, xi] = min(out[ci, yi, xi], s)
    return out


# -- layers -----------------------------------------------------------------------------------

def _correlate(plane_stack: np.ndarray, weights: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """conv2d (cross-correlation) of (C_in, H, W) with (C_out, C_in, kh, kw), zero padding."""
    c_in, h, w = plane_stack.shape
    c_out, _, kh, kw = weights.shape
    x = np.pad(plane_stack, ((0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (w + 2 * pad - kw) // stride + 1
    out = np.zeros((c_out, ho, wo))
    for oy in range(ho):
        for ox in range(wo):
            patch = x[:, oy * stride:oy * stride + kh, ox * stride:ox * stride + kw]
            out[:, oy, ox] = np.einsum("fcij,cij->f", weights, patch)
    return out


def conv(times, weights, thresholds, stride, pad, time_steps, leak=1.0):
    """IF/LIF convolution on the cumulative wave: V(t) = leak·V(t−1) + W ⋆ (wave[t] − wave[t−1]);
    fire at the first t with V(t) > threshold. Returns (t_out, v_first, v_final)."""
    wave = wave_from_times(times, time_steps)
    arrivals = np.diff(wave, axis=0, prepend=0.0)
    v = None
    t_out = v_first = None
    for t in range(time_steps):
        inc = _correlate(arrivals[t], weights, stride, pad)
        v = inc if v is None else leak * v + inc
        if t_out is None:
            t_out = np.full(v.shape, NO_SPIKE, dtype=np.int32)
            v_first = np.zeros(v.shape)
        new = (v > np.asarray(thresholds).reshape(-1, 1, 1)) & (t_out == NO_SPIKE)
        t_out[new] = t
        v_first[new] = v[new]
    return t_out, v_first, v


def pool(times, kernel, stride, pad, time_steps=None):
    """Max pooling of the cumulative wave (earliest spike per window)."""
    t_max = int(times[times != NO_SPIKE].max()) + 1 if (times != NO_SPIKE).any() else 1
    T = time_steps or t_max
    wave = wave_from_times(times, T)
    c, h, w = times.shape
    x = np.pad(wave, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - kernel) // stride + 1
    wo = (w + 2 * pad - kernel) // stride + 1
    out = np.zeros((T, c, ho, wo))
    for oy in range(ho):
        for ox in range(wo):
            out[:, :, oy, ox] = x[:, :, oy * stride:oy * stride + kernel, ox * stride:ox * stride + kernel].max(axis=(2, 3))
    return times_from_wave(out)


def pointwise_inhibition(t_out, v_first):
    """Per position: winner = earliest spike, then highest potential, then lowest feature."""
    t_out = t_out.copy()
    v_first = v_first.copy()
    c, h, w = t_out.shape
    for y in range(h):
        for x in range(w):
            cands = [(int(t_out[f, y, x]), -float(v_first[f, y, x]), f) for f in range(c)
                     if t_out[f, y, x] != NO_SPIKE]
            if not cands:
                continue
            win = min(cands)[2]
            for f in range(c):
                if f != win:
                    t_out[f, y, x] = NO_SPIKE
                    v_first[f, y, x] = 0.0
    return t_out, v_first


def k_winners(t_out, v_first, k, radius):
    """SpykeTorch's procedure literally: pick the best, zero its feature and its neighbourhood."""
    t_out = t_out.astype(np.int64).copy()
    c, h, w = t_out.shape
    alive = t_out != NO_SPIKE
    winners = []
    for _ in range(k):
        if not alive.any():
            break
        keys = [(int(t_out[f, y, x]), -float(v_first[f, y, x]), (f * h + y) * w + x, f, y, x)
                for f, y, x in zip(*np.nonzero(alive))]
        _, _, _, f, y, x = min(keys)
        winners.append((f, y, x))
        alive[f] = False
        alive[:, max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1] = False
    return np.array(winners, dtype=np.int64).reshape(-1, 3)


def stdp(weights, in_times, winners, t_out, a_plus, a_minus, stride, pad, stabilize=True, w_lo=0.0, w_hi=1.0):
    """Returns updated weights (copy): Δw = a±·(w−lo)(hi−w), '+' when t_pre <= t_post."""
    weights = weights.copy()
    _, c_in, kh, kw = weights.shape
    padded = np.pad(in_times.astype(np.int64), ((0, 0), (pad, pad), (pad, pad)), constant_values=NO_SPIKE)
    for f, oy, ox in winners:
        t_post = t_out[f, oy, ox]
        patch = padded[:, oy * stride:oy * stride + kh, ox * stride:ox * stride + kw]
        a = np.where(patch <= t_post, a_plus[f], a_minus[f])
        g = (weights[f] - w_lo) * (w_hi - weights[f]) if stabilize else 1.0
        weights[f] = np.clip(weights[f] + a * g, w_lo, w_hi)
    return weights


# -- encoders ---------------------------------------------------------------------------------

def dog_kernel(size: int, sigma1: float, sigma2: float) -> np.ndarray:
    """(1/2π)(G_σ1/σ1² − G_σ2/σ2²), zero mean, divided by its maximum."""
    r = size // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    d2 = xx * xx + yy * yy
    g1 = np.exp(-d2 / (2 * sigma1 ** 2)) / sigma1 ** 2
    g2 = np.exp(-d2 / (2 * sigma2 ** 2)) / sigma2 ** 2
    k = (g1 - g2) / (2 * math.pi)
    k = k - k.mean()
    return k / k.max()


def filter2d(image: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Same-size cross-correlation of a 2-D image with (K, s, s) kernels, zero padding."""
    k, s, _ = kernels.shape
    r = s // 2
    x = np.pad(image.astype(np.float64), r)
    h, w = image.shape
    out = np.zeros((k, h, w))
    for y in range(h):
        for xx in range(w):
            out[:, y, xx] = (kernels * x[y:y + s, xx:xx + s]).sum(axis=(1, 2))
    return out


def local_normalize(maps: np.ndarray, radius: int, eps: float = 1e-12) -> np.ndarray:
    """Divide each map by its local mean over a (2r+1)² window (zero padded)."""
    c, h, w = maps.shape
    x = np.pad(maps, ((0, 0), (radius, radius), (radius, radius)))
    out = np.zeros_like(maps, dtype=np.float64)
    s = 2 * radius + 1
    for y in range(h):
        for xx in range(w):
            out[:, y, xx] = maps[:, y, xx] / (x[:, y:y + s, xx:xx + s].sum(axis=(1, 2)) / (s * s) + eps)
    return out


def rank_latency(intensity: np.ndarray, time_steps: int, threshold: float = 0.0) -> np.ndarray:
    """Intensity-to-latency: values above ``threshold`` sorted descending (ties by flat index) are
    cut into T bins of n//T values (at least 1); bin i spikes at step i; the rest never spike."""
    flat = intensity.ravel()
    pos = [(-float(v), i) for i, v in enumerate(flat) if v > threshold]
    pos.sort()
    bin_size = max(1, len(pos) // time_steps)
    out = np.full(flat.shape, NO_SPIKE, dtype=np.int32)
    for rank, (_, i) in enumerate(pos):
        if rank // bin_size < time_steps:
            out[i] = rank // bin_size
    return out.reshape(intensity.shape)


def count_map(x, y, height, width, downsample=1):
    out = np.zeros((height, width))
    for xi, yi in zip(x, y):
        out[yi // downsample, xi // downsample] += 1
    return out


def time_surface(t, x, y, height, width, t_ref_us, tau_us, downsample=1):
    """exp(−(t_ref − t_last)/τ) of the last event per pixel, 0 where none."""
    last = {}
    for ti, xi, yi in zip(t, x, y):
        key = (yi // downsample, xi // downsample)
        last[key] = max(last.get(key, -np.inf), ti)
    out = np.zeros((height, width))
    for (yy, xx), tl in last.items():
        out[yy, xx] = math.exp(-(t_ref_us - tl) / tau_us)
    return out


def append_events(buf, t_col, lo, n, events):
    """Twin of ``append_events_``: copy, then classify the order (0 backwards inside, 1 in order
    but before the live buffer's last event, 2 continuing it)."""
    m = len(events)
    buf[n:n + m] = events
    t_col[n:n + m] = events["t"]
    t = [int(v) for v in events["t"]]
    if any(b < a for a, b in itertools.pairwise(t)):
        return 0
    if n > lo and m and t[0] < int(t_col[n - 1]):
        return 1
    return 2


class Windows:
    """Twin of ``encoders._Windows``: the original concatenating version (a fresh buffer per
    packet), windows cut with ``np.searchsorted`` on the whole buffer."""

    def __init__(self, window_us, stride_us):
        self.window, self.stride = int(window_us), int(stride_us)
        self.ws = None
        self.buf = None

    def push(self, events, t0_us, t1_us):
        if self.ws is None:
            self.ws = int(t0_us) if t1_us > t0_us or not len(events) else int(events["t"][0])
        if len(events):
            t = events["t"]
            if not np.all(t[1:] >= t[:-1]):
                events = np.sort(events, order="t", kind="stable")
            self.buf = events.copy() if self.buf is None else np.concatenate([self.buf, events])
        horizon = max(int(t1_us), int(events["t"][-1]) + 1 if len(events) else 0)
        return self._cut(horizon)

    def _cut(self, horizon):
        out = []
        t = self.buf["t"] if self.buf is not None else np.zeros(0, np.int64)
        while self.ws + self.window <= horizon:
            first = int(np.searchsorted(t, self.ws))
            if first >= len(t):
                k = (horizon - self.window - self.ws) // self.stride + 1
                self.ws += max(1, k) * self.stride
                break
            if int(t[first]) >= self.ws + self.window:
                self.ws += ((int(t[first]) - self.ws - self.window) // self.stride + 1) * self.stride
                continue
            out.append((self.ws, self.buf[first:int(np.searchsorted(t, self.ws + self.window))].copy()))
            self.ws += self.stride
        if len(t):
            self.buf = self.buf[int(np.searchsorted(t, self.ws)):]
        return out

    def flush(self):
        if self.ws is None or self.buf is None or not len(self.buf):
            return []
        return self._cut(int(self.buf["t"][-1]) + self.window)


def grid_windows(events, ws0, window_us, stride_us):
    """Every non-empty window [ws, ws + window) with ws = ws0 + k·stride <= the last event, of a
    time-sorted stream starting at or after ws0: what the windowing gives over a whole stream."""
    out = []
    if not len(events):
        return out
    ws = ws0
    while ws <= int(events["t"][-1]):
        sel = events[(events["t"] >= ws) & (events["t"] < ws + window_us)]
        if len(sel):
            out.append((ws, sel))
        ws += stride_us
    return out
