"""Numba kernels of the encoders: event maps, DoG filtering, local normalisation and
intensity-to-latency (rank-order) coding. Pure array functions (numpy/numba/math only);
``spikeflow.nodes.encoders`` wraps them.

Spike-time maps are int32 (C, H, W) with ``NO_SPIKE`` for silent neurons, as in
``spikeflow.nodes.snn_kernels`` (same sentinel value, repeated here so this file stays
self-contained for numba's cache).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

NO_SPIKE = 2147483647


@njit(cache=True)
def count_map(x, y, height, width, downsample):
    """Events per pixel (all polarities) on a (H, W) grid, coordinates divided by ``downsample``;
    events falling outside the grid are ignored."""
    out = np.zeros((height, width))
    for i in range(x.shape[0]):
        yy = y[i] // downsample
        xx = x[i] // downsample
        if yy >= 0 and yy < height and xx >= 0 and xx < width:
            out[yy, xx] += 1.0
    return out


@njit(cache=True)
def time_surface(t, x, y, height, width, t_ref_us, tau_us, downsample):
    """Exponentially decaying time surface: exp(−(t_ref − t_last)/τ) of the latest event per
    pixel, 0 where the window had none."""
    last = np.full((height, width), -1, dtype=np.int64)
    seen = np.zeros((height, width), dtype=np.bool_)
    for i in range(t.shape[0]):
        yy = y[i] // downsample
        xx = x[i] // downsample
        if yy >= 0 and yy < height and xx >= 0 and xx < width:
            if not seen[yy, xx] or t[i] > last[yy, xx]:
                last[yy, xx] = t[i]
                seen[yy, xx] = True
    out = np.zeros((height, width))
    for yy in range(height):
        for xx in range(width):
            if seen[yy, xx]:
                out[yy, xx] = math.exp(-(t_ref_us - last[yy, xx]) / tau_us)
    return out


@njit(cache=True)
def filter2d(image, kernels):
    """Same-size cross-correlation of a (H, W) image with (K, s, s) kernels, zero padding
    (s odd). Returns (K, H, W). Zero pixels are skipped (event maps are sparse)."""
    k_n, s, _ = kernels.shape
    r = s // 2
    h, w = image.shape
    out = np.zeros((k_n, h, w))
    for y in range(h):
        for x in range(w):
            v = image[y, x]
            if v == 0.0:
                continue
            # pixel (y, x) contributes to outputs (y - dy, x - dx) through kernel tap (r+dy, r+dx)
            for ky in range(s):
                oy = y - ky + r
                if oy < 0 or oy >= h:
                    continue
                for kx in range(s):
                    ox = x - kx + r
                    if ox < 0 or ox >= w:
                        continue
                    for k in range(k_n):
                        out[k, oy, ox] += kernels[k, ky, kx] * v
    return out


@njit(cache=True)
def local_normalize(maps, radius, eps):
    """Divide each map by its local mean over a (2r+1)² zero-padded window (SpykeTorch's
    ``local_normalization``), via a summed-area table."""
    c_n, h, w = maps.shape
    s = 2 * radius + 1
    out = np.empty((c_n, h, w))
    sat = np.zeros((h + 1, w + 1))
    for c in range(c_n):
        for y in range(h):
            row = 0.0
            for x in range(w):
                row += maps[c, y, x]
                sat[y + 1, x + 1] = sat[y, x + 1] + row
        for y in range(h):
            y0 = max(0, y - radius)
            y1 = min(h, y + radius + 1)
            for x in range(w):
                x0 = max(0, x - radius)
                x1 = min(w, x + radius + 1)
                total = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
                out[c, y, x] = maps[c, y, x] / (total / (s * s) + eps)
    return out


@njit(cache=True)
def rank_latency(intensity, time_steps, threshold):
    """Intensity-to-latency (rank-order) coding, SpykeTorch's ``Intensity2Latency``.

    Values above ``threshold`` are sorted in descending order (ties: lower flat index first) and
    cut into T bins of max(1, n // T) values; values in bin i spike at step i, the rest never.
    Returns an int32 spike-time map of the same shape as ``intensity``.
    """
    flat = intensity.ravel()
    n = 0
    for i in range(flat.shape[0]):
        if flat[i] > threshold:
            n += 1
    idx = np.empty(n, dtype=np.int64)
    vals = np.empty(n)
    j = 0
    for i in range(flat.shape[0]):
        if flat[i] > threshold:
            idx[j] = i
            vals[j] = -flat[i]
            j += 1
    order = np.argsort(vals, kind="mergesort")  # stable: ties keep flat order
    bin_size = max(1, n // time_steps)
    out = np.full(flat.shape[0], NO_SPIKE, dtype=np.int32)
    for rank in range(n):
        b = rank // bin_size
        if b >= time_steps:
            break
        out[idx[order[rank]]] = b
    return out.reshape(intensity.shape)


@njit(cache=True)
def append_events_(buf, t_col, lo, n, events):
    """Copy ``events`` (structured, with a ``t`` field) to ``buf[n:]`` and their timestamps to the
    int64 column ``t_col[n:]`` (room checked by the caller), in one pass that also checks their
    order. Returns 0 when their timestamps go backwards somewhere, 1 when they are in order but
    start before the live buffer's last event (``t_col[n - 1]``, live = ``[lo, n)``), 2 when
    they also continue the live buffer in order (or it is empty)."""
    m = events.shape[0]
    in_order = True
    for i in range(m):
        buf[n + i] = events[i]
        ti = np.int64(events[i].t)
        t_col[n + i] = ti
        if i > 0 and ti < t_col[n + i - 1]:
            in_order = False
    if not in_order:
        return 0
    if n > lo and m > 0 and t_col[n] < t_col[n - 1]:
        return 1
    return 2
