"""Numba kernels of the spiking core: IF/LIF convolution (event-driven and dense), first-spike
pooling, pointwise inhibition, k-winners-take-all and multiplicative STDP.

Pure array functions (numpy/numba/math only); ``spikeflow.nodes.snn`` wraps and validates them.
They share one file because they call each other and numba's cache does not see edits across
files.

Layouts and conventions (Kheradpisheh et al. 2018, SpykeTorch):

* A *spike-time map* ``times`` is int32 ``(C, H, W)``: the time step (0..T-1) of a neuron's first
  and only spike in the window, or ``NO_SPIKE``. It is the compressed form of SpykeTorch's
  cumulative spike-wave ``(T, C, H, W)`` (``wave[t] = times <= t``).
* Weights are float64 ``(C_out, C_in, kh, kw)`` in [0, 1].
* Potentials are float64. A neuron fires at the first step t where its potential V(t) exceeds its
  threshold (strictly, as SpykeTorch's ``fire``); ``v_first`` is V at that step, ``v_final`` is
  V at step T-1 (the features a readout uses).
* IF: V(t) = V(t-1) + sum of weights of inputs spiking at t. LIF: V(t) = leak * V(t-1) + ...
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

NO_SPIKE = 2147483647
"""Spike-time value of a neuron that did not fire in the window."""

BAND_ELEMS = 65536
"""Potentials per band of output rows in the event kernels (float64: 512 KB, about half of L2)."""


@njit(cache=True)
def times_from_events_into(out, c, y, x, step, time_steps):
    """Fill ``out`` (C, H, W) int32 with the first spike step per (channel, y, x) from parallel
    arrays (NO_SPIKE elsewhere); steps outside [0, T) and coordinates outside the map are
    ignored. Reusing ``out`` across samples avoids fresh pages for every window."""
    n_channels, height, width = out.shape
    out[:] = NO_SPIKE
    for i in range(c.shape[0]):
        ci = c[i]
        yi = y[i]
        xi = x[i]
        s = step[i]
        if s < 0 or s >= time_steps:
            continue
        if ci < 0 or ci >= n_channels or yi < 0 or yi >= height or xi < 0 or xi >= width:
            continue
        if s < out[ci, yi, xi]:
            out[ci, yi, xi] = s
    return out


@njit(cache=True)
def times_from_events(c, y, x, step, n_channels, height, width, time_steps):
    """:func:`times_from_events_into` on a new (C, H, W) map."""
    out = np.empty((n_channels, height, width), dtype=np.int32)
    return times_from_events_into(out, c, y, x, step, time_steps)


@njit(cache=True)
def out_size(n, kernel, stride, pad):
    """Output length of a convolution/pooling along one axis."""
    return (n + 2 * pad - kernel) // stride + 1


@njit(cache=True)
def count_spikes(times, time_steps):
    """Number of neurons that fired (time < T)."""
    n = 0
    flat = times.ravel()
    for i in range(flat.shape[0]):
        if flat[i] < time_steps:
            n += 1
    return n


@njit(cache=True)
def conv_dense(times, weights, thresholds, stride, pad, time_steps, leak, inhibit, want_potentials):
    """Dense path: every output neuron visits its whole receptive field.

    For each neuron, input spikes of its receptive field are histogrammed per time step, then
    the potential is integrated step by step. Cost ~ C_out*H_out*W_out*(C_in*kh*kw + T),
    independent of activity. With ``inhibit``, :func:`pointwise_inhibition_` follows.
    Returns ``(t_out, v_first, v_final, n_in, n_out, n_removed)``. ``want_potentials``: 0 = no
    potential maps (both empty, shape (0, 0, 0)), 1 = ``v_first`` only (what k-WTA needs),
    2 = both.
    """
    c_in, h, w = times.shape
    c_out, _, kh, kw = weights.shape
    ho = out_size(h, kh, stride, pad)
    wo = out_size(w, kw, stride, pad)
    t_out = np.full((c_out, ho, wo), NO_SPIKE, dtype=np.int32)
    v_first = np.zeros((c_out, ho, wo))
    v_final = np.zeros((c_out, ho, wo))
    hist = np.zeros(time_steps)
    n_out = 0
    for f in range(c_out):
        thr = thresholds[f]
        for oy in range(ho):
            for ox in range(wo):
                hist[:] = 0.0
                any_in = False
                for c in range(c_in):
                    for ky in range(kh):
                        iy = oy * stride + ky - pad
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(kw):
                            ix = ox * stride + kx - pad
                            if ix < 0 or ix >= w:
                                continue
                            t = times[c, iy, ix]
                            if t < time_steps:
                                hist[t] += weights[f, c, ky, kx]
                                any_in = True
                if not any_in:
                    continue
                v = 0.0
                for t in range(time_steps):
                    v = v * leak + hist[t]
                    if t_out[f, oy, ox] == NO_SPIKE and v > thr:
                        t_out[f, oy, ox] = t
                        v_first[f, oy, ox] = v
                        n_out += 1
                v_final[f, oy, ox] = v
    n_removed = 0
    if inhibit:
        n_removed = pointwise_inhibition_(t_out, v_first)
    if want_potentials < 2:
        v_final = np.zeros((0, 0, 0))
    if want_potentials < 1:
        v_first = np.zeros((0, 0, 0))
    return t_out, v_first, v_final, count_spikes(times, time_steps), n_out - n_removed, n_removed


@njit(cache=True)
def spikes_by_step(times, time_steps):
    """Flat indices of spiking inputs grouped by time step: ``(order, starts)``; step t's spikes
    are ``order[starts[t]:starts[t+1]]`` in flat order (one scan, then a counting sort)."""
    flat = times.ravel()
    idx = np.empty(flat.shape[0], dtype=np.int64)
    counts = np.zeros(time_steps + 1, dtype=np.int64)
    n = 0
    for i in range(flat.shape[0]):
        t = flat[i]
        if t < time_steps:
            idx[n] = i
            n += 1
            counts[t + 1] += 1
    for t in range(time_steps):
        counts[t + 1] += counts[t]
    order = np.empty(n, dtype=np.int64)
    fill = counts[:time_steps].copy()
    for j in range(n):
        i = idx[j]
        t = flat[i]
        order[fill[t]] = i
        fill[t] += 1
    return order, counts


@njit(cache=True)
def _scale_row(dst, factor):
    for f in range(dst.shape[0]):
        dst[f] *= factor


@njit(cache=True)
def _conv_event_scatter(order, starts, c_in, h, w, weights, thresholds, stride, pad, time_steps, leak, skip_settled,
                        prune, v, done, stamp, last, settled, visited, ub, npend, pend, wt, wmax, fired_k, fired_t,
                        fired_v):
    """The spiking phase of the event-driven path (see :func:`conv_event_ws`): scatters the input
    spikes into the workspaces and appends every threshold crossing (position·C_out + map, step,
    potential) to the ``fired_*`` arrays, in step order within each band of output rows. With
    ``skip_settled`` (pointwise inhibition on) a position is decided at its first crossing step, so
    only its winner is listed and the other maps crossing with it are counted in ``n_lost``.
    Returns ``(n_fired, n_visited, n_lost)``; the workspaces are left for the caller to read and
    clear (:func:`_clear_ws`).

    ``v``/``done`` may have more columns than maps (padding to a SIMD-friendly width; padded maps
    get weight 0 and threshold +inf, so they never fire).

    With ``prune`` (IF neurons only, leak = 1), a position's inputs are first only *recorded*
    (``pend``, ``npend``) while the bound ``ub`` = Σ max_f W_f(tap) stays <= min_f θ_f: no map can
    be above its threshold then (every term of V_f is <= the bound's, and rounded float addition is
    monotonic, so V_f <= ub holds in floating point too). Once the bound passes the smallest
    threshold (or the record is full), the recorded taps are replayed into ``v`` in arrival order —
    the same additions in the same order as without pruning, so potentials and spike times are
    bit-identical — and the position continues unpruned. Most positions a sparse input touches never
    get near a threshold and never pay the C_out-wide row updates.
    """
    c_out, _, kh, kw = weights.shape
    c_pad = v.shape[1]
    ho = out_size(h, kh, stride, pad)
    wo = out_size(w, kw, stride, pad)
    n_pos = ho * wo
    # feature-last layouts keep the innermost loop contiguous (SIMD); one row per tap (rebuilt
    # every call in the caller's buffers: weights may have changed in place)
    for c in range(c_in):
        for ky in range(kh):
            for kx in range(kw):
                tap = (c * kh + ky) * kw + kx
                m = 0.0
                for f in range(c_out):
                    wv = weights[f, c, ky, kx]
                    wt[tap, f] = wv
                    if wv > m:
                        m = wv
                for f in range(c_out, c_pad):
                    wt[tap, f] = 0.0
                wmax[tap] = m
    thr = np.full(c_pad, np.inf)
    thr_min = np.inf
    for f in range(c_out):
        thr[f] = thresholds[f]
        if thresholds[f] < thr_min:
            thr_min = thresholds[f]
    cap_pend = pend.shape[1]
    prune = prune and leak == 1.0 and cap_pend > 0
    if prune and skip_settled:
        return _scatter_pruned_if(order, starts, h, w, kh, kw, c_out, wt, wmax, thr, thr_min, stride, pad,
                                  time_steps, v, visited, ub, npend, pend, fired_k, fired_t, fired_v)
    cand = np.empty(n_pos, dtype=np.int64)
    cand_stamp = np.zeros(n_pos, dtype=np.int32)
    n_visited = 0
    n_fired = 0
    n_lost = 0
    hw = h * w
    leaky = leak != 1.0
    # Output rows are processed in bands whose potentials fit in L2 (~512 KB), each band over
    # all time steps: a neuron only depends on its own inputs, so the order across bands is free.
    band = max(1, 65536 // max(1, wo * c_pad))
    for b0 in range(0, ho, band):
        b1 = min(ho, b0 + band)
        for t in range(time_steps):
            n_cand = 0
            for j in range(starts[t], starts[t + 1]):
                idx = order[j]
                c = idx // hw
                rem = idx - c * hw
                y = rem // w
                if (y + pad) // stride < b0 or y + pad - kh + 1 >= b1 * stride:
                    continue  # reaches no output row of this band
                x = rem - y * w
                for ky in range(kh):
                    ny = y + pad - ky
                    if ny < 0:
                        continue
                    oy = ny
                    if stride != 1:  # integer division is slow: only pay it for strided layers
                        if ny % stride != 0:
                            continue
                        oy = ny // stride
                    if oy < b0 or oy >= b1:
                        continue
                    for kx in range(kw):
                        nx = x + pad - kx
                        if nx < 0:
                            continue
                        ox = nx
                        if stride != 1:
                            if nx % stride != 0:
                                continue
                            ox = nx // stride
                        if ox >= wo:
                            continue
                        pos = oy * wo + ox
                        if skip_settled and settled[pos] != 0 and settled[pos] <= t:
                            continue  # fired in an earlier step: the winner here is decided
                        if stamp[pos] != t + 1:
                            if stamp[pos] == 0:
                                visited[n_visited] = pos
                                n_visited += 1
                            stamp[pos] = t + 1
                            if leaky and t > last[pos]:
                                _scale_row(v[pos], math.pow(leak, t - last[pos]))
                            last[pos] = t
                        tap = (c * kh + ky) * kw + kx
                        row = v[pos]
                        if prune and npend[pos] >= 0:
                            bound = ub[pos] + wmax[tap]
                            n_p = npend[pos]
                            if bound <= thr_min and n_p < cap_pend:
                                ub[pos] = bound  # no map can fire yet: only record the tap
                                pend[pos, n_p] = tap
                                npend[pos] = n_p + 1
                                continue
                            for r in range(n_p):  # replay in arrival order, then go on unpruned
                                wrow = wt[pend[pos, r]]
                                for f in range(c_pad):
                                    row[f] += wrow[f]
                            npend[pos] = -1
                        wrow = wt[tap]
                        hit = False
                        if skip_settled:  # an unsettled position has no map done yet
                            for f in range(c_pad):
                                xv = row[f] + wrow[f]
                                row[f] = xv
                                hit |= xv > thr[f]
                        else:
                            drow = done[pos]
                            for f in range(c_pad):
                                xv = row[f] + wrow[f]
                                row[f] = xv
                                hit |= (xv > thr[f]) > drow[f]
                        # weights >= 0: a map above threshold now is still above at the end of the step
                        if hit and cand_stamp[pos] != t + 1:
                            cand_stamp[pos] = t + 1
                            cand[n_cand] = pos
                            n_cand += 1
            for i in range(n_cand):
                pos = cand[i]
                if skip_settled:
                    # the position is decided at this step: keep only its pointwise winner (higher
                    # potential, then lower map), count the maps it silences
                    fb = -1
                    for f in range(c_out):
                        if v[pos, f] > thr[f]:
                            n_lost += 1
                            if fb < 0 or v[pos, f] > v[pos, fb]:
                                fb = f
                    if fb < 0:
                        continue
                    n_lost -= 1
                    done[pos, fb] = True
                    settled[pos] = t + 1
                    fired_k[n_fired] = pos * c_out + fb
                    fired_t[n_fired] = t
                    fired_v[n_fired] = v[pos, fb]
                    n_fired += 1
                    continue
                for f in range(c_out):
                    if v[pos, f] > thr[f] and not done[pos, f]:
                        done[pos, f] = True
                        settled[pos] = t + 1
                        fired_k[n_fired] = pos * c_out + f
                        fired_t[n_fired] = t
                        fired_v[n_fired] = v[pos, f]
                        n_fired += 1
    return n_fired, n_visited, n_lost


@njit(cache=True)
def _scatter_pruned_if(order, starts, h, w, kh, kw, c_out, wt, wmax, thr, thr_min, stride, pad, time_steps,
                       v, visited, ub, npend, pend, fired_k, fired_t, fired_v):
    """:func:`_conv_event_scatter` for its most common case — IF neurons (leak = 1), pointwise
    inhibition, pruning — with the per-position state in one array: ``npend`` = 0 untouched,
    n > 0 pending (n taps recorded), −1 materialised (potentials in ``v``), −2 settled (fired in
    an earlier step). Same additions in the same order, same crossings, same return value."""
    c_pad = v.shape[1]
    ho = out_size(h, kh, stride, pad)
    wo = out_size(w, kw, stride, pad)
    n_pos = ho * wo
    cap_pend = pend.shape[1]
    cand = np.empty(n_pos, dtype=np.int64)
    cand_stamp = np.zeros(n_pos, dtype=np.int32)
    n_visited = 0
    n_fired = 0
    n_lost = 0
    hw = h * w
    # decode every input once (integer division is slow), with the range of output rows it reaches
    n_in = starts[time_steps]
    in_c = np.empty(n_in, dtype=np.int64)
    in_y = np.empty(n_in, dtype=np.int64)
    in_x = np.empty(n_in, dtype=np.int64)
    in_top = np.empty(n_in, dtype=np.int64)
    for j in range(n_in):
        idx = order[j]
        c = idx // hw
        rem = idx - c * hw
        y = rem // w
        in_c[j] = c
        in_y[j] = y
        in_x[j] = rem - y * w
        in_top[j] = (y + pad) // stride
    band = max(1, BAND_ELEMS // max(1, wo * c_pad))
    for b0 in range(0, ho, band):
        b1 = min(ho, b0 + band)
        for t in range(time_steps):
            n_cand = 0
            for j in range(starts[t], starts[t + 1]):
                y = in_y[j]
                if in_top[j] < b0 or y + pad - kh + 1 >= b1 * stride:
                    continue  # reaches no output row of this band
                c = in_c[j]
                x = in_x[j]
                for ky in range(kh):
                    ny = y + pad - ky
                    if ny < 0:
                        continue
                    oy = ny
                    if stride != 1:
                        if ny % stride != 0:
                            continue
                        oy = ny // stride
                    if oy < b0 or oy >= b1:
                        continue
                    tap0 = (c * kh + ky) * kw
                    for kx in range(kw):
                        nx = x + pad - kx
                        if nx < 0:
                            continue
                        ox = nx
                        if stride != 1:
                            if nx % stride != 0:
                                continue
                            ox = nx // stride
                        if ox >= wo:
                            continue
                        pos = oy * wo + ox
                        state = npend[pos]
                        if state == -2:
                            continue  # fired in an earlier step: the winner here is decided
                        tap = tap0 + kx
                        row = v[pos]
                        if state >= 0:
                            if state == 0:
                                visited[n_visited] = pos
                                n_visited += 1
                            bound = ub[pos] + wmax[tap]
                            if bound <= thr_min and state < cap_pend:
                                ub[pos] = bound  # no map can fire yet: only record the tap
                                pend[pos, state] = tap
                                npend[pos] = state + 1
                                continue
                            for r in range(state):  # replay in arrival order, then go on unpruned
                                wrow = wt[pend[pos, r]]
                                for f in range(c_pad):
                                    row[f] += wrow[f]
                            npend[pos] = -1
                        wrow = wt[tap]
                        hit = False
                        for f in range(c_pad):
                            xv = row[f] + wrow[f]
                            row[f] = xv
                            hit |= xv > thr[f]
                        # weights >= 0: a map above threshold now is still above at the end of the step
                        if hit and cand_stamp[pos] != t + 1:
                            cand_stamp[pos] = t + 1
                            cand[n_cand] = pos
                            n_cand += 1
            for i in range(n_cand):
                pos = cand[i]
                fb = -1
                for f in range(c_out):
                    if v[pos, f] > thr[f]:
                        n_lost += 1
                        if fb < 0 or v[pos, f] > v[pos, fb]:
                            fb = f
                if fb < 0:
                    continue
                n_lost -= 1
                npend[pos] = -2
                fired_k[n_fired] = pos * c_out + fb
                fired_t[n_fired] = t
                fired_v[n_fired] = v[pos, fb]
                n_fired += 1
    return n_fired, n_visited, n_lost


@njit(cache=True)
def _clear_ws(visited, n_visited, v, done, stamp, last, settled, ub, npend):
    """Zero the workspace entries of the visited positions (left clean for the next sample);
    potential rows of positions that only ever recorded taps (``npend`` > 0) were never written."""
    c_pad = v.shape[1]
    for i in range(n_visited):
        pos = visited[i]
        stamp[pos] = 0
        last[pos] = 0
        settled[pos] = 0
        ub[pos] = 0.0
        if npend[pos] <= 0:
            for f in range(c_pad):
                v[pos, f] = 0.0
                done[pos, f] = False
        npend[pos] = 0


@njit(cache=True)
def weight_workspace(c_in, kh, kw, c_pad):
    """Scratch of the event kernels for the transposed weights: ``wt`` (C_in·kh·kw, C_pad) and the
    per-tap maximum ``wmax`` (C_in·kh·kw,), float64 (contents free; kept to spare a fresh
    allocation — and its page faults — per sample)."""
    return np.empty((c_in * kh * kw, c_pad)), np.empty(c_in * kh * kw)


@njit(cache=True)
def prune_workspace(n_pos, c_in, kh, kw):
    """Pruning buffers of :func:`_conv_event_scatter`: ``ub`` float64 and ``npend`` int32
    (H_out·W_out,) zero, ``pend`` int32 (H_out·W_out, min(C_in·kh·kw, 64)) (contents free)."""
    return (np.zeros(n_pos), np.zeros(n_pos, dtype=np.int32),
            np.empty((n_pos, min(c_in * kh * kw, 64)), dtype=np.int32))


@njit(cache=True)
def conv_event_ws(times, order, starts, weights, thresholds, stride, pad, time_steps, leak, inhibit, want_potentials,
                  v, done, stamp, last, settled, visited):
    """Event-driven path: only incoming spikes scatter their weight patch into potentials.

    Spikes are processed in time-step order; at the end of each step only the positions touched
    in that step are checked against the thresholds (an untouched potential cannot rise). The
    leak is applied lazily per position (all maps of a position are updated together). With
    ``inhibit``, pointwise inhibition is resolved from the list of fired neurons. Cost ~
    n_spikes·C_out·kh·kw. Same outputs as :func:`conv_dense`. Requires weights >= 0 (STDP keeps
    them in [0, 1]): a crossing seen while a step's spikes are added then holds at its end.

    Workspaces (reused across samples, all zero on entry and left zero on exit, so a sample
    costs no dense clearing): ``v`` float64 and ``done`` bool (H_out·W_out, C_out), ``stamp``,
    ``last``, ``settled`` int32 and ``visited`` int64 (H_out·W_out,).

    With ``inhibit`` and no final potentials wanted, a position whose first spike came in an
    earlier step is settled (pointwise inhibition already decided it), so later inputs skip it. ``order``/``starts`` come from
    :func:`spikes_by_step`.
    """
    c_in, h, w = times.shape
    c_out, _, kh, kw = weights.shape
    ho = out_size(h, kh, stride, pad)
    wo = out_size(w, kw, stride, pad)
    n_pos = ho * wo
    n_in = starts[time_steps]
    cap = min(n_pos * c_out, n_in * kh * kw * c_out)
    fired_k = np.empty(cap, dtype=np.int64)
    fired_t = np.empty(cap, dtype=np.int32)
    fired_v = np.empty(cap)
    ub, npend, pend = prune_workspace(n_pos, c_in, kh, kw)
    wt, wmax = weight_workspace(c_in, kh, kw, v.shape[1])
    n_fired, n_visited, n_lost = _conv_event_scatter(order, starts, c_in, h, w, weights, thresholds, stride, pad,
                                                     time_steps, leak, inhibit and want_potentials < 2,
                                                     want_potentials < 2, v, done, stamp, last, settled, visited, ub,
                                                     npend, pend, wt, wmax, fired_k, fired_t, fired_v)
    leaky = leak != 1.0
    t_out = np.full((c_out, ho, wo), NO_SPIKE, dtype=np.int32)
    v_first = np.zeros((c_out, ho, wo) if want_potentials >= 1 else (0, 0, 0))
    n_out = n_fired
    best = np.empty(0, dtype=np.int64)
    if inhibit:
        # per position: earliest step, then higher potential, then lower map (list is time-ordered)
        best = np.full(n_pos, -1, dtype=np.int64)
        for i in range(n_fired):
            pos = fired_k[i] // c_out
            b = best[pos]
            if b < 0:
                best[pos] = i
            elif fired_t[i] == fired_t[b] and (fired_v[i] > fired_v[b] or (
                    fired_v[i] == fired_v[b] and fired_k[i] < fired_k[b])):
                best[pos] = i
        n_out = 0
        for i in range(n_fired):
            if best[fired_k[i] // c_out] == i:
                n_out += 1
    for i in range(n_fired):
        k = fired_k[i]
        pos = k // c_out
        if inhibit and best[pos] != i:
            continue
        f = k - pos * c_out
        oy = pos // wo
        ox = pos - oy * wo
        t_out[f, oy, ox] = fired_t[i]
        if want_potentials >= 1:
            v_first[f, oy, ox] = fired_v[i]
    if want_potentials >= 2:
        v_final = np.empty((c_out, ho, wo))
        for pos in range(n_pos):
            scale = 1.0
            if leaky:
                scale = math.pow(leak, time_steps - 1 - last[pos])
            oy = pos // wo
            ox = pos - oy * wo
            for f in range(c_out):
                v_final[f, oy, ox] = v[pos, f] * scale
    else:
        v_final = np.zeros((0, 0, 0))
    _clear_ws(visited, n_visited, v, done, stamp, last, settled, ub, npend)  # zero for the next sample
    return t_out, v_first, v_final, n_in, n_out, n_fired + n_lost - n_out


@njit(cache=True)
def conv_event(times, weights, thresholds, stride, pad, time_steps, leak, inhibit, want_potentials):
    """Event-driven path with fresh workspaces: see :func:`conv_event_ws`."""
    c_out, _, kh, kw = weights.shape
    n_pos = out_size(times.shape[1], kh, stride, pad) * out_size(times.shape[2], kw, stride, pad)
    order, starts = spikes_by_step(times, time_steps)
    return conv_event_ws(times, order, starts, weights, thresholds, stride, pad, time_steps, leak, inhibit,
                         want_potentials, np.zeros((n_pos, c_out)), np.zeros((n_pos, c_out), dtype=np.bool_),
                         np.zeros(n_pos, dtype=np.int32), np.zeros(n_pos, dtype=np.int32),
                         np.zeros(n_pos, dtype=np.int32), np.empty(n_pos, dtype=np.int64))


@njit(cache=True)
def conv_auto(times, weights, thresholds, stride, pad, time_steps, leak, inhibit, want_potentials, dense_fraction,
              v, done, stamp, last, settled, visited):
    """Choose the path by activity: event-driven (on the given workspaces, see
    :func:`conv_event_ws`) when at most ``dense_fraction`` of the inputs spiked, else dense.
    ``dense_fraction`` < 0 forces dense, > 1 forces event-driven. Returns :func:`conv_event`'s
    tuple plus ``used_dense``."""
    order, starts = spikes_by_step(times, time_steps)
    if starts[time_steps] <= dense_fraction * times.size:
        a, b, c, d, e, g = conv_event_ws(times, order, starts, weights, thresholds, stride, pad, time_steps, leak,
                                         inhibit, want_potentials, v, done, stamp, last, settled, visited)
        return a, b, c, d, e, g, False
    a, b, c, d, e, g = conv_dense(times, weights, thresholds, stride, pad, time_steps, leak, inhibit, want_potentials)
    return a, b, c, d, e, g, True


# -- sparse samples ----------------------------------------------------------------------------
# A *sparse sample* is ``(order, starts)`` as :func:`spikes_by_step` returns it: int64 flat indices
# c·H·W + y·W + x of the spiking neurons sorted by (step, flat index), step t's spikes being
# ``order[starts[t]:starts[t+1]]``. Layers chained in this form never build (or scan) a dense map.


@njit(cache=True)
def _sorted_sample(keys, n, n_neurons, time_steps):
    """Sparse sample from ``keys[:n]`` = step·n_neurons + flat index (unique): a counting sort by
    step, then each step's (short) run of flat indices sorted."""
    starts = np.zeros(time_steps + 1, dtype=np.int64)
    for i in range(n):
        starts[keys[i] // n_neurons + 1] += 1
    for t in range(time_steps):
        starts[t + 1] += starts[t]
    fill = starts[:time_steps].copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        t = keys[i] // n_neurons
        order[fill[t]] = keys[i] - t * n_neurons
        fill[t] += 1
    for t in range(time_steps):
        if starts[t + 1] - starts[t] > 1:
            order[starts[t]:starts[t + 1]].sort()
    return order, starts


@njit(cache=True)
def sparse_from_fields(t, p, y, x, t_start, step_len, downsample, n_channels, height, width, time_steps, first):
    """Event fields (views of an ``EVENT_DTYPE`` array: t, p = channel, y, x) -> sparse sample of
    first-spike steps, step = (t − t_start) // step_len at (p, y // downsample, x // downsample);
    steps outside [0, T) and coordinates outside the map are dropped, a neuron's earliest step
    wins. ``first`` is an int32 workspace of C·H·W entries, all NO_SPIKE on entry and left so.
    Events already in (step, flat index) order — what every layer emits — skip the sort."""
    n_neurons = n_channels * height * width
    keys = np.empty(t.shape[0], dtype=np.int64)
    n = 0
    s = 0
    lo = 1  # [lo, hi): the times of step s (empty at first); time-sorted input rarely divides
    hi = 0
    for i in range(t.shape[0]):
        ti = t[i]
        if ti < lo or ti >= hi:
            s = (ti - t_start) // step_len
            lo = t_start + s * step_len
            hi = lo + step_len
        if s < 0 or s >= time_steps:
            continue
        ci = np.int64(p[i])
        yi = np.int64(y[i])
        xi = np.int64(x[i])
        if downsample != 1:
            yi = yi // downsample
            xi = xi // downsample
        if ci < 0 or ci >= n_channels or yi < 0 or yi >= height or xi < 0 or xi >= width:
            continue
        k = (ci * height + yi) * width + xi
        if first[k] == NO_SPIKE:
            keys[n] = k
            n += 1
            first[k] = s
        elif s < first[k]:
            first[k] = s
    in_order = True
    for i in range(n):
        k = keys[i]
        keys[i] = first[k] * n_neurons + k
        first[k] = NO_SPIKE
        if i > 0 and keys[i] < keys[i - 1]:
            in_order = False
    if not in_order:
        return _sorted_sample(keys, n, n_neurons, time_steps)
    order = np.empty(n, dtype=np.int64)
    starts = np.zeros(time_steps + 1, dtype=np.int64)
    for i in range(n):
        st = keys[i] // n_neurons
        order[i] = keys[i] - st * n_neurons
        starts[st + 1] += 1
    for st in range(time_steps):
        starts[st + 1] += starts[st]
    return order, starts


@njit(cache=True)
def sparse_from_events(c, y, x, step, n_channels, height, width, time_steps, first):
    """Parallel event arrays (channel, y, x, step) -> sparse sample of first-spike steps (same
    spikes as :func:`times_from_events_into`, without a dense output); see
    :func:`sparse_from_fields`."""
    return sparse_from_fields(step, c, y, x, 0, 1, 1, n_channels, height, width, time_steps, first)


@njit(cache=True)
def fill_events_(t_out, x_out, y_out, p_out, order, starts, height, width, t_start, step_len):
    """Sparse sample -> event fields in place (views of an ``EVENT_DTYPE`` array of
    ``len(order)`` rows): t = t_start + step·step_len, p = channel, y, x."""
    hw = height * width
    for st in range(starts.shape[0] - 1):
        ts = t_start + st * step_len
        for j in range(starts[st], starts[st + 1]):
            k = order[j]
            c = k // hw
            rem = k - c * hw
            yy = rem // width
            t_out[j] = ts
            p_out[j] = c
            y_out[j] = yy
            x_out[j] = rem - yy * width


@njit(cache=True)
def sparse_to_times(order, starts, n_channels, height, width, time_steps):
    """Sparse sample -> dense int32 (C, H, W) spike-time map."""
    out = np.full(n_channels * height * width, NO_SPIKE, dtype=np.int32)
    for t in range(time_steps):
        for j in range(starts[t], starts[t + 1]):
            out[order[j]] = t
    return out.reshape((n_channels, height, width))


@njit(cache=True)
def sparse_scatter_(flat_map, order, starts, time_steps, value_of_step):
    """Write each spike's step (``value_of_step`` True) or NO_SPIKE (False) into a flat int32 map:
    fills, then clears, a reusable dense map in O(spikes)."""
    for t in range(time_steps):
        for j in range(starts[t], starts[t + 1]):
            flat_map[order[j]] = t if value_of_step else NO_SPIKE


@njit(cache=True)
def conv_event_sparse(order, starts, c_in, h, w, weights, thresholds, stride, pad, time_steps, leak, inhibit,
                      v, done, stamp, last, settled, visited, best, ub, npend, pend, wt, wmax, fired_k, fired_t,
                      fired_v):
    """Event-driven convolution from a sparse sample to a sparse sample (no dense map in or out).

    Same spikes as :func:`conv_event_ws` (same scatter, same pointwise inhibition), returned as
    ``(out_order, out_starts, out_v, n_in, n_out, n_removed)`` with ``out_v`` the potential of each
    output spike at its step (v_first, what k-WTA needs). Workspaces as :func:`conv_event_ws` plus
    ``best`` int64 (H_out·W_out,) all −1, :func:`prune_workspace`, :func:`weight_workspace`, and
    ``fired_k`` int64, ``fired_t`` int32, ``fired_v`` float64 of H_out·W_out·C_out entries
    (contents free); all are reused across samples and the zero/−1 ones are left so."""
    c_out = weights.shape[0]
    kh = weights.shape[2]
    kw = weights.shape[3]
    ho = out_size(h, kh, stride, pad)
    wo = out_size(w, kw, stride, pad)
    n_pos = ho * wo
    n_fired, n_visited, n_lost = _conv_event_scatter(order, starts, c_in, h, w, weights, thresholds, stride, pad,
                                                     time_steps, leak, inhibit, True, v, done, stamp, last, settled,
                                                     visited, ub, npend, pend, wt, wmax, fired_k, fired_t, fired_v)
    n_neurons = c_out * n_pos
    keys = np.empty(n_fired, dtype=np.int64)
    vals = np.empty(n_fired)
    n_out = 0
    if inhibit:
        # per position: earliest step, then higher potential, then lower map (as conv_event_ws)
        for i in range(n_fired):
            pos = fired_k[i] // c_out
            b = best[pos]
            if b < 0:
                best[pos] = i
            elif fired_t[i] == fired_t[b] and (fired_v[i] > fired_v[b] or (
                    fired_v[i] == fired_v[b] and fired_k[i] < fired_k[b])):
                best[pos] = i
    for i in range(n_fired):
        k = fired_k[i]
        pos = k // c_out
        if inhibit and best[pos] != i:
            continue
        keys[n_out] = fired_t[i] * n_neurons + (k - pos * c_out) * n_pos + pos
        vals[n_out] = fired_v[i]
        n_out += 1
    if inhibit:
        for i in range(n_fired):
            best[fired_k[i] // c_out] = -1
    perm = np.argsort(keys[:n_out])
    out_order = np.empty(n_out, dtype=np.int64)
    out_v = np.empty(n_out)
    out_starts = np.zeros(time_steps + 1, dtype=np.int64)
    for r in range(n_out):
        k = keys[perm[r]]
        t = k // n_neurons
        out_order[r] = k - t * n_neurons
        out_v[r] = vals[perm[r]]
        out_starts[t + 1] += 1
    for t in range(time_steps):
        out_starts[t + 1] += out_starts[t]
    _clear_ws(visited, n_visited, v, done, stamp, last, settled, ub, npend)  # zero for the next sample
    return out_order, out_starts, out_v, starts[time_steps], n_out, n_fired + n_lost - n_out


@njit(cache=True)
def first_spike_pool_count(times, kernel, stride, pad, time_steps):
    """First-spike (max) pooling: each output carries the earliest spike time of its window
    (max pooling of a cumulative spike-wave; padding never spikes). Spikes scatter into the
    windows that contain them, so the cost follows activity. Returns ``(out, n_in, n_out)``."""
    c_n, h, w = times.shape
    ho = out_size(h, kernel, stride, pad)
    wo = out_size(w, kernel, stride, pad)
    out = np.full((c_n, ho, wo), NO_SPIKE, dtype=np.int32)
    n_in = 0
    n_out = 0
    for c in range(c_n):
        for y in range(h):
            for x in range(w):
                t = times[c, y, x]
                if t >= time_steps:
                    continue
                n_in += 1
                num = y + pad - kernel + 1
                oy0 = 0 if num <= 0 else (num + stride - 1) // stride
                oy1 = min(ho - 1, (y + pad) // stride)
                num = x + pad - kernel + 1
                ox0 = 0 if num <= 0 else (num + stride - 1) // stride
                ox1 = min(wo - 1, (x + pad) // stride)
                for oy in range(oy0, oy1 + 1):
                    for ox in range(ox0, ox1 + 1):
                        cur = out[c, oy, ox]
                        if t < cur:
                            if cur == NO_SPIKE:
                                n_out += 1
                            out[c, oy, ox] = t
    return out, n_in, n_out


@njit(cache=True)
def first_spike_pool(times, kernel, stride, pad):
    """:func:`first_spike_pool_count` without the counts (every time below NO_SPIKE spikes)."""
    out, _, _ = first_spike_pool_count(times, kernel, stride, pad, NO_SPIKE)
    return out


@njit(cache=True)
def pool_sparse(order, starts, c_n, h, w, kernel, stride, pad, time_steps, first):
    """First-spike pooling from a sparse sample to a sparse sample (same spikes as
    :func:`first_spike_pool_count`): inputs come in step order, so the first spike reaching an
    output window is its earliest. ``first`` is an int32 workspace of C·H_out·W_out entries, all
    NO_SPIKE on entry and left so. Returns ``(order, starts, n_in, n_out)``."""
    ho = out_size(h, kernel, stride, pad)
    wo = out_size(w, kernel, stride, pad)
    n_neurons = c_n * ho * wo
    hw = h * w
    n_in = starts[time_steps]
    span = (kernel + stride - 1) // stride
    keys = np.empty(min(n_neurons, n_in * span * span), dtype=np.int64)
    n = 0
    for t in range(time_steps):
        for j in range(starts[t], starts[t + 1]):
            idx = order[j]
            c = idx // hw
            rem = idx - c * hw
            y = rem // w
            x = rem - y * w
            num = y + pad - kernel + 1
            oy0 = 0 if num <= 0 else (num + stride - 1) // stride
            oy1 = min(ho - 1, (y + pad) // stride)
            num = x + pad - kernel + 1
            ox0 = 0 if num <= 0 else (num + stride - 1) // stride
            ox1 = min(wo - 1, (x + pad) // stride)
            for oy in range(oy0, oy1 + 1):
                for ox in range(ox0, ox1 + 1):
                    o = (c * ho + oy) * wo + ox
                    if first[o] == NO_SPIKE:
                        first[o] = t
                        keys[n] = t * n_neurons + o
                        n += 1
    for i in range(n):
        k = keys[i]
        first[k - (k // n_neurons) * n_neurons] = NO_SPIKE
    out_order, out_starts = _sorted_sample(keys, n, n_neurons, time_steps)
    return out_order, out_starts, n_in, n


@njit(cache=True)
def pointwise_inhibition_(t_out, v_first):
    """At each position keep only the feature that fired first (ties: higher ``v_first``, then the
    lower feature index); the others are silenced in place (time NO_SPIKE, potential 0).
    Returns the number of spikes removed."""
    c_n, h, w = t_out.shape
    removed = 0
    for y in range(h):
        for x in range(w):
            best = -1
            for f in range(c_n):
                t = t_out[f, y, x]
                if t == NO_SPIKE:
                    continue
                if best < 0 or t < t_out[best, y, x] or (t == t_out[best, y, x] and v_first[f, y, x] > v_first[best, y, x]):
                    best = f
            if best < 0:
                continue
            for f in range(c_n):
                if f != best and t_out[f, y, x] != NO_SPIKE:
                    t_out[f, y, x] = NO_SPIKE
                    v_first[f, y, x] = 0.0
                    removed += 1
    return removed


@njit(cache=True)
def _k_winners_cand(cand, ct, cv, h, w, k, radius):
    """k-WTA over candidate spikes: flat indices ``cand`` (f·H·W + y·W + x), their steps ``ct`` and
    potentials ``cv``, listed so that equal (step, potential) pairs come in increasing flat index
    (flat order or (step, flat) order both do). Returns ``(winners (n, 3), their steps (n,))``."""
    n_spk = cand.shape[0]
    alive = np.ones(n_spk, dtype=np.bool_)
    winners = np.empty((k, 3), dtype=np.int64)
    t_win = np.empty(k, dtype=np.int64)
    n_win = 0
    hw = h * w
    while n_win < k:
        best = -1
        for j in range(n_spk):
            if not alive[j]:
                continue
            if best < 0:
                best = j
                continue
            if ct[j] < ct[best] or (ct[j] == ct[best] and cv[j] > cv[best]):
                best = j
        if best < 0:
            break
        i = cand[best]
        f = i // hw
        rem = i - f * hw
        y = rem // w
        x = rem - y * w
        winners[n_win, 0] = f
        winners[n_win, 1] = y
        winners[n_win, 2] = x
        t_win[n_win] = ct[best]
        n_win += 1
        for j in range(n_spk):
            if not alive[j]:
                continue
            i2 = cand[j]
            f2 = i2 // hw
            rem2 = i2 - f2 * hw
            y2 = rem2 // w
            x2 = rem2 - y2 * w
            if f2 == f or (abs(y2 - y) <= radius and abs(x2 - x) <= radius):
                alive[j] = False
    return winners[:n_win].copy(), t_win[:n_win].copy()


@njit(cache=True)
def k_winners(t_out, v_first, k, radius):
    """k-winners-take-all for learning: ``(n, 3)`` int64 rows (feature, y, x), n <= k.

    Winners are chosen one at a time: the earliest spike, ties to the higher potential at
    that step, then the lowest flat index. After each choice its feature map and every neuron
    (all features) within Chebyshev distance ``radius`` of its position are excluded.
    """
    c_n, h, w = t_out.shape
    n_spk = 0
    flat = t_out.ravel()
    for i in range(flat.shape[0]):
        if flat[i] != NO_SPIKE:
            n_spk += 1
    cand = np.empty(n_spk, dtype=np.int64)
    ct = np.empty(n_spk, dtype=np.int64)
    cv = np.empty(n_spk)
    vflat = v_first.ravel()
    j = 0
    for i in range(flat.shape[0]):
        if flat[i] != NO_SPIKE:
            cand[j] = i
            ct[j] = flat[i]
            cv[j] = vflat[i]
            j += 1
    winners, _ = _k_winners_cand(cand, ct, cv, h, w, k, radius)
    return winners


@njit(cache=True)
def k_winners_sparse(order, starts, v_out, h, w, time_steps, k, radius):
    """:func:`k_winners` on a sparse sample (``v_out``: potential of each spike at its step, as
    :func:`conv_event_sparse` returns it). Returns ``(winners (n, 3), their steps (n,))``."""
    ct = np.empty(order.shape[0], dtype=np.int64)
    for t in range(time_steps):
        for j in range(starts[t], starts[t + 1]):
            ct[j] = t
    return _k_winners_cand(order, ct, v_out, h, w, k, radius)


@njit(cache=True)
def stdp_(weights, in_times, winners, t_out, a_plus, a_minus, stride, pad, stabilize, w_lo, w_hi):
    """Multiplicative STDP on the winners' weights, in place.

    For winner (f, y, x) firing at t_post and each synapse (c, ky, kx) with pre-synaptic spike
    time t_pre (NO_SPIKE outside the map or when silent):
    Δw = a⁺_f · (w − w_lo)(w_hi − w) if t_pre <= t_post, else a⁻_f · (w − w_lo)(w_hi − w)
    (the stabiliser factor is 1 when ``stabilize`` is False); then w is clipped to [w_lo, w_hi].
    Returns the number of synapses updated.
    """
    t_post_of = np.empty(winners.shape[0], dtype=np.int64)
    for r in range(winners.shape[0]):
        t_post_of[r] = t_out[winners[r, 0], winners[r, 1], winners[r, 2]]
    return stdp_post_(weights, in_times, winners, t_post_of, a_plus, a_minus, stride, pad, stabilize, w_lo, w_hi)


@njit(cache=True)
def stdp_post_(weights, in_times, winners, t_post_of, a_plus, a_minus, stride, pad, stabilize, w_lo, w_hi):
    """:func:`stdp_` with the winners' post-synaptic steps given (``t_post_of[r]`` for row r)."""
    _, c_in, kh, kw = weights.shape
    _, h, w = in_times.shape
    n = 0
    for r in range(winners.shape[0]):
        f = winners[r, 0]
        oy = winners[r, 1]
        ox = winners[r, 2]
        t_post = t_post_of[r]
        for c in range(c_in):
            for ky in range(kh):
                iy = oy * stride + ky - pad
                for kx in range(kw):
                    ix = ox * stride + kx - pad
                    t_pre = NO_SPIKE
                    if iy >= 0 and iy < h and ix >= 0 and ix < w:
                        t_pre = in_times[c, iy, ix]
                    a = a_plus[f] if t_pre <= t_post else a_minus[f]
                    wv = weights[f, c, ky, kx]
                    g = (wv - w_lo) * (w_hi - wv) if stabilize else 1.0
                    wv = wv + a * g
                    if wv < w_lo:
                        wv = w_lo
                    elif wv > w_hi:
                        wv = w_hi
                    weights[f, c, ky, kx] = wv
                    n += 1
    return n
