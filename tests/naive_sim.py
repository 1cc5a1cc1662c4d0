"""Slow, obviously-correct twins of the simulator kernels (drivers/sim_kernels.py).

The twin of ``dvs_events_`` is a different formulation: it walks each pixel through time one
microsecond at a time and fires while the log change since the reference reaches a threshold
somewhere in ``[t, t+1]`` and the pixel is out of its refractory period. No crossing-time
algebra; it only needs ``L`` linear between frames and the leak linear in time.
"""

from __future__ import annotations

import math

import numpy as np

MASK = (1 << 64) - 1


def splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def hash_uniform(seed: int, stream: int, pixel: int, k: int) -> float:
    h = splitmix64(seed ^ ((stream * 0x8CB92BA72F3D8DD7) & MASK))
    h = splitmix64(h ^ ((pixel * 0xD1B54A32D192ED03) & MASK))
    h = splitmix64(h ^ k)
    return ((h >> 11) + 0.5) / 2.0 ** 53


def lowpass_log(log_frames, t_us, state, prev_t_us, cutoff_hz):
    """Returns filtered copies; ``state`` is the value at ``prev_t_us``."""
    out = np.empty_like(log_frames)
    s = state.copy()
    t_prev = prev_t_us
    for k in range(len(t_us)):
        eps = min(1.0, 2 * math.pi * cutoff_hz * (t_us[k] - t_prev) * 1e-6)
        s = s + eps * (log_frames[k] - s)
        out[k] = s
        t_prev = t_us[k]
    return out, s


def dvs_events(log_frames, t_us, ref0, thr_on, thr_off, leak_per_us, refractory_us):
    """Events (t, x, y, p) from log frames (T, H, W) at ``t_us``: frame 0 sets the reference."""
    n_t, h, w = log_frames.shape
    events = []
    for y in range(h):
        for x in range(w):
            ref = float(ref0[y, x])
            last = -(1 << 62)
            on, off = float(thr_on[y, x]), float(thr_off[y, x])
            leak = float(leak_per_us[y, x]) * on  # reference drift per µs
            for k in range(n_t - 1):
                t0, t1 = int(t_us[k]), int(t_us[k + 1])
                l0, l1 = float(log_frames[k, y, x]), float(log_frames[k + 1, y, x])

                def diff(t, ref_at_t0):
                    return l0 + (l1 - l0) * (t - t0) / (t1 - t0) - (ref_at_t0 - leak * (t - t0))

                ref_t0 = ref  # reference at t0, before leak; events shift it by ±threshold
                for t in range(t0, t1):
                    while t >= last + refractory_us:
                        a, b = diff(t, ref_t0), diff(t + 1, ref_t0)
                        # a change already past a threshold (refractory) fires first
                        if a >= on or (a > -off and b >= on):
                            events.append((t, x, y, 1))
                            ref_t0 += on
                        elif a <= -off or b <= -off:
                            events.append((t, x, y, 0))
                            ref_t0 -= off
                        else:
                            break
                        last = t
                ref = ref_t0 - leak * (t1 - t0)
    return events


def shot_noise(seed, rate_hz, t_first_us, t_end_us, h, w):
    """Per-pixel Poisson events in [t_first_us, t_end_us) from the same hash draws."""
    events = []
    rate_per_us = rate_hz * 1e-6
    for y in range(h):
        for x in range(w):
            pix = y * w + x
            t = t_first_us - math.log(hash_uniform(seed, 0, pix, 0)) / rate_per_us
            k = 1
            while t < t_end_us:
                pol = 1 if hash_uniform(seed, 1, pix, k) < 0.5 else 0
                events.append((int(math.floor(t)), x, y, pol))
                t -= math.log(hash_uniform(seed, 0, pix, k)) / rate_per_us
                k += 1
    return events
