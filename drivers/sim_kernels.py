"""Numba kernels of the DVS pixel simulator (pure array functions; numpy/numba/math only).

Pixel model (ESIM / v2e): each pixel keeps a reference log intensity ``ref``. Between two frames
the log intensity ``L`` moves linearly from ``L0`` (at ``t0``) to ``L1`` (at ``t1``); the leak
lowers ``ref`` at ``leak_per_us * thr_on`` log units per µs. With ``D(t) = L(t) - ref(t)``
(linear inside one interval), an ON event fires each time ``D`` reaches ``+thr_on`` (then
``ref += thr_on``) and an OFF event each time ``D`` reaches ``-thr_off`` (``ref -= thr_off``),
at the interpolated crossing time. A pixel cannot fire again before ``last + refractory_us``:
a crossing inside the refractory period is emitted when it ends (the change is delayed, not
lost, as v2e does by not updating ``ref``). Events are emitted in ``[t0, t1)``; one crossing
exactly at ``t1`` belongs to the next interval, so feeding frames one by one or all at once
gives identical output.

Shot noise: every pixel is an independent Poisson process of rate ``noise_per_us`` with random
polarity, drawn from a counter-based hash (splitmix64) of ``(seed, pixel, k)`` so the draws do
not depend on how the video is split into calls. Noise events do not touch ``ref``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_PIX = np.uint64(0xD1B54A32D192ED03)
_STREAM = np.uint64(0x8CB92BA72F3D8DD7)


@njit(cache=True)
def splitmix64(z):
    """Steele et al.'s splitmix64 finaliser: a well-mixed 64-bit hash of ``z`` (uint64)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def hash_uniform(seed, stream, pixel, k):
    """Uniform draw in (0, 1) from the hash of (seed, stream, pixel, k); all non-negative ints."""
    h = splitmix64(np.uint64(seed) ^ (np.uint64(stream) * _STREAM))
    h = splitmix64(h ^ (np.uint64(pixel) * _PIX))
    h = splitmix64(h ^ np.uint64(k))
    return (float(h >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def lowpass_log_(log_frames, t_us, state, prev_t_us, cutoff_hz):
    """First-order low-pass (photoreceptor bandwidth) of log frames (T, H, W), in place.

    ``state`` (H, W) is the filtered value at ``prev_t_us`` and is updated to the last frame's.
    Per frame: ``eps = min(1, 2π·cutoff_hz·Δt_s)``, ``state += eps·(L - state)``.
    """
    n_t, h, w = log_frames.shape
    t_prev = prev_t_us
    for k in range(n_t):
        eps = 2.0 * math.pi * cutoff_hz * (t_us[k] - t_prev) * 1e-6
        if eps > 1.0:
            eps = 1.0
        for y in range(h):
            for x in range(w):
                state[y, x] += eps * (log_frames[k, y, x] - state[y, x])
                log_frames[k, y, x] = state[y, x]
        t_prev = t_us[k]


@njit(cache=True)
def dvs_events_(prev_log, prev_t_us, log_frames, t_us, ref, thr_on, thr_off, leak_per_us,
                last_t_us, refractory_us, noise_per_us, noise_next_us, noise_k, seed,
                out_t, out_x, out_y, out_p):
    """Events of every pixel over the intervals prev→frame 0→…→frame T-1 (frame-major order).

    Arrays: ``prev_log`` (H, W) log intensity at ``prev_t_us``; ``log_frames`` (T, H, W) and
    ``t_us`` (T,) strictly increasing. State updated in place: ``ref``, ``last_t_us`` (last event
    time, int64), ``noise_next_us`` (next noise time, float64; negative = not drawn yet),
    ``noise_k`` (noise draws so far). Writes at most ``len(out_t)`` events and returns how many
    were produced; when that exceeds the capacity the caller restores the state and re-runs.
    Within one interval, events come pixel by pixel (raster order), each pixel's in time order.
    """
    n_t, h, w = log_frames.shape
    cap = out_t.shape[0]
    n = 0
    t0 = prev_t_us
    for k in range(n_t):
        t1 = t_us[k]
        span = float(t1 - t0)
        for y in range(h):
            for x in range(w):
                pix = y * w + x
                l0 = prev_log[y, x] if k == 0 else log_frames[k - 1, y, x]
                l1 = log_frames[k, y, x]
                r = ref[y, x]
                last = last_t_us[y, x]
                t_on = thr_on[y, x]
                t_off = thr_off[y, x]
                d0 = l0 - r
                s = (l1 - l0) / span + leak_per_us[y, x] * t_on
                adj = 0.0
                tau = float(t0)
                while True:
                    t_free = last + refractory_us  # earliest time this pixel may fire again
                    if t_free >= t1:
                        break
                    if t_free > tau:
                        tau = float(t_free)
                    d_tau = d0 + s * (tau - t0) + adj
                    if d_tau >= t_on:  # crossed while refractory: fire as soon as allowed
                        pol = 1
                        tc = tau
                    elif d_tau <= -t_off:
                        pol = 0
                        tc = tau
                    elif s > 0.0:
                        pol = 1
                        tc = t0 + (t_on - d0 - adj) / s
                    elif s < 0.0:
                        pol = 0
                        tc = t0 + (-t_off - d0 - adj) / s
                    else:
                        break
                    te = np.int64(math.floor(tc))
                    if te >= t1:
                        break
                    if n < cap:
                        out_t[n] = te
                        out_x[n] = x
                        out_y[n] = y
                        out_p[n] = pol
                    n += 1
                    last = te
                    if pol == 1:
                        adj -= t_on
                    else:
                        adj += t_off
                    tau = tc
                ref[y, x] = l1 - (d0 + s * span + adj)
                last_t_us[y, x] = last
                if noise_per_us > 0.0:
                    nxt = noise_next_us[y, x]
                    k_noise = noise_k[y, x]
                    if nxt < 0.0:
                        nxt = t0 - math.log(hash_uniform(seed, 0, pix, k_noise)) / noise_per_us
                        k_noise += 1
                    while nxt < t1:
                        if n < cap:
                            out_t[n] = np.int64(math.floor(nxt))
                            out_x[n] = x
                            out_y[n] = y
                            out_p[n] = 1 if hash_uniform(seed, 1, pix, k_noise) < 0.5 else 0
                        n += 1
                        nxt -= math.log(hash_uniform(seed, 0, pix, k_noise)) / noise_per_us
                        k_noise += 1
                    noise_next_us[y, x] = nxt
                    noise_k[y, x] = k_noise
        t0 = t1
    return n
