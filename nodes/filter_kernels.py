"""Numba kernels of the event filters: pure array functions, per-pixel state passed in and mutated.

Every kernel takes a per-pixel timestamp map ``last_t_us`` of shape (H, W), int64, that survives
across packets (the node owns it). Events outside the sensor are never kept and never touch the
map; the kernels count them. A trailing underscore marks that they mutate their arguments
(SpykeTorch's ``fire_`` convention).

Two forms of each filter: ``background_activity_`` / ``refractory_`` take the event columns
(``x``, ``y``, ``t``) and write a boolean ``keep`` mask; the ``*_compact_`` forms take the
structured event array itself and copy the kept events into ``out`` in the same pass. The nodes
use the latter: one call per packet instead of field views, a mask, a count and ``np.compress``
(which cost more than the filtering itself on 1 ms packets of a few dozen events).
"""

import numpy as np
from numba import njit

NEVER_US = -(1 << 62)
"""Timestamp of a pixel that never fired: far enough back that ``t - NEVER_US`` cannot overflow."""


@njit(cache=True)
def _recent_neighbour(last_t_us, xi, yi, ti, window_us, radius, eight):
    """True when a neighbour of (xi, yi) (not the pixel itself) fired within ``[ti - window_us + 1, ti]``."""
    h, w = last_t_us.shape
    for dy in range(-radius, radius + 1):
        yy = yi + dy
        if yy < 0 or yy >= h:
            continue
        for dx in range(-radius, radius + 1):
            if dx == 0 and dy == 0:
                continue
            if not eight and dx != 0 and dy != 0:
                continue
            xx = xi + dx
            if xx < 0 or xx >= w:
                continue
            age = ti - last_t_us[yy, xx]
            if age >= 0 and age < window_us:
                return True
    return False


@njit(cache=True)
def background_activity_(last_t_us, x, y, t, window_us, radius, eight, keep):
    """Background-activity filter (Delbruck 2008): keep an event when a *neighbour* pixel fired
    within the last ``window_us`` (``0 <= t - t_nb < window_us``), the event's own pixel excluded.

    Neighbourhood: the (2r+1)^2 square minus the centre (``eight`` true) or the 4-connected
    cross of radius r (``eight`` false). After the test, ``last_t_us[y, x] = t``.
    Writes ``keep``; returns the number of events outside the sensor.
    """
    h, w = last_t_us.shape
    out_of_range = 0
    for i in range(t.shape[0]):
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        ti = t[i]
        if xi < 0 or yi < 0 or xi >= w or yi >= h:
            keep[i] = False
            out_of_range += 1
            continue
        keep[i] = _recent_neighbour(last_t_us, xi, yi, ti, window_us, radius, eight)
        last_t_us[yi, xi] = ti
    return out_of_range


@njit(cache=True)
def _recent_neighbour8_interior(last_t_us, xi, yi, ti, window):
    """:func:`_recent_neighbour` for radius 1, eight neighbours, a pixel not on the border: the
    eight ages compared at once, unsigned (a negative age wraps to a huge value), no bounds
    checks, no branches."""
    r0 = last_t_us[yi - 1]
    r1 = last_t_us[yi]
    r2 = last_t_us[yi + 1]
    return ((np.uint64(ti - r0[xi - 1]) < window) | (np.uint64(ti - r0[xi]) < window)
            | (np.uint64(ti - r0[xi + 1]) < window) | (np.uint64(ti - r1[xi - 1]) < window)
            | (np.uint64(ti - r1[xi + 1]) < window) | (np.uint64(ti - r2[xi - 1]) < window)
            | (np.uint64(ti - r2[xi]) < window) | (np.uint64(ti - r2[xi + 1]) < window))


@njit(cache=True)
def _recent_neighbour4_interior(last_t_us, xi, yi, ti, window):
    """The same for the 4-connected cross of radius 1 (tonic's ``Denoise``)."""
    r1 = last_t_us[yi]
    return ((np.uint64(ti - last_t_us[yi - 1, xi]) < window) | (np.uint64(ti - r1[xi - 1]) < window)
            | (np.uint64(ti - r1[xi + 1]) < window) | (np.uint64(ti - last_t_us[yi + 1, xi]) < window))


@njit(cache=True)
def background_activity_compact_(last_t_us, events, window_us, radius, eight, out):
    """:func:`background_activity_` on a structured event array (fields t, x, y), copying each
    kept event to ``out`` (same dtype, at least as long) in order.
    Returns ``(n_kept, out_of_range)``: the kept events are ``out[:n_kept]``.

    Why it differs from the mask kernel: every event inside the sensor is copied to
    ``out[n_kept]`` and ``n_kept`` grows only when it is kept (no branch on the outcome, which
    real data makes unpredictable), and a radius-1 neighbourhood (8 or 4 neighbours) of a pixel
    off the border is tested in one branch-free expression: 2.8x faster on DVS128 Gesture at the
    default 5 ms window (18.8 -> 6.6 ns per event, bench/bench_filters.py), same events kept.
    """
    h, w = last_t_us.shape
    out_of_range = 0
    n_kept = 0
    window = np.uint64(window_us)
    fast = radius == 1
    for i in range(events.shape[0]):
        xi = np.int64(events[i].x)
        yi = np.int64(events[i].y)
        ti = np.int64(events[i].t)
        if xi < 0 or yi < 0 or xi >= w or yi >= h:
            out_of_range += 1
            continue
        if fast and xi >= 1 and yi >= 1 and xi < w - 1 and yi < h - 1:
            if eight:
                hit = _recent_neighbour8_interior(last_t_us, xi, yi, ti, window)
            else:
                hit = _recent_neighbour4_interior(last_t_us, xi, yi, ti, window)
        else:
            hit = _recent_neighbour(last_t_us, xi, yi, ti, window_us, radius, eight)
        out[n_kept] = events[i]
        n_kept += np.int64(hit)
        last_t_us[yi, xi] = ti
    return n_kept, out_of_range


@njit(cache=True)
def refractory_(last_t_us, x, y, t, refractory_us, keep):
    """Per-pixel refractory period: keep an event when its pixel's last *kept* event is at least
    ``refractory_us`` older (``t - t_last >= refractory_us``); only kept events reset the pixel.
    Writes ``keep``; returns the number of events outside the sensor.
    """
    h, w = last_t_us.shape
    out_of_range = 0
    for i in range(t.shape[0]):
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        if xi < 0 or yi < 0 or xi >= w or yi >= h:
            keep[i] = False
            out_of_range += 1
            continue
        ti = t[i]
        if ti - last_t_us[yi, xi] >= refractory_us:
            keep[i] = True
            last_t_us[yi, xi] = ti
        else:
            keep[i] = False
    return out_of_range


@njit(cache=True)
def _copy_prefix(events, out, n):
    """``out[:n] = events[:n]`` (once per packet, at its first dropped event)."""
    for j in range(n):
        out[j] = events[j]


@njit(cache=True)
def _refractory_copy_from(last_t_us, events, refractory_us, out, start):
    """The rest of :func:`refractory_compact_` once ``events[:start]`` are kept and copied:
    each later kept event is copied to ``out[n_kept]``. Returns ``(n_kept, out_of_range)``."""
    h, w = last_t_us.shape
    out_of_range = 0
    n_kept = start
    for j in range(start, events.shape[0]):
        e = events[np.uint64(j)]   # (unsigned indices: start >= 0 is not known to the compiler,
        xi = np.int64(e.x)         # and a signed index would be checked for wrap-around)
        yi = np.int64(e.y)
        if xi < 0 or yi < 0 or xi >= w or yi >= h:
            out_of_range += 1
            continue
        ti = np.int64(e.t)
        if ti - last_t_us[yi, xi] >= refractory_us:
            out[np.uint64(n_kept)] = e
            n_kept += 1
            last_t_us[yi, xi] = ti
    return n_kept, out_of_range


@njit(cache=True)
def refractory_compact_(last_t_us, events, refractory_us, out):
    """:func:`refractory_` on a structured event array, copying the kept events to ``out``.
    Returns ``(n_kept, out_of_range)``. When every event is kept (``n_kept == len(events)``)
    ``out`` is left untouched: the kept events are ``events`` itself.

    Why two loops: the first runs while every event is kept and copies nothing, so a packet
    that loses nothing is never copied; from the first dropped event on, the events before it
    are copied at once and each later kept event after them. (A branch-free copy, as in
    :func:`background_activity_compact_`, was slower here: 7.1-7.7 against 5.2-6.8 ns per
    event on DVS128 Gesture at 1 ms.)
    """
    h, w = last_t_us.shape
    n = events.shape[0]
    i = 0
    while i < n:   # everything kept so far
        xi = np.int64(events[i].x)
        yi = np.int64(events[i].y)
        if xi < 0 or yi < 0 or xi >= w or yi >= h:
            break
        ti = np.int64(events[i].t)
        if ti - last_t_us[yi, xi] < refractory_us:
            break
        last_t_us[yi, xi] = ti
        i += 1
    if i == n:
        return n, 0
    _copy_prefix(events, out, i)
    return _refractory_copy_from(last_t_us, events, refractory_us, out, i)
