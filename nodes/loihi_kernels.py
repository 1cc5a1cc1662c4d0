"""Numba kernels of the Loihi emulator: per-spike fan-out, routing and mapping counts.

Pure array functions (numpy/numba only); ``loihi_mapping`` and ``loihi_model`` validate and wrap
them. A layer's geometry is an int64 array ``g``::

    g = [in_c, in_h, in_w, out_c, out_h, out_w, kh, kw, stride, pad, pooling]

Neurons of a layer are numbered in (y, x, c) order: ``nid = (y * W + x) * C + c`` so that a
core holding a contiguous range of neurons holds whole spatial rows with all their channels.
A source neuron (c, y, x) of the layer below reaches output (oc, oy, ox) when
``oy*stride - pad <= y < oy*stride - pad + kh`` (same for x) and, for pooling, ``oc == c``
(conv connects every input channel to every output channel).
Cores of a layer hold contiguous neuron ranges ``bounds[k] <= nid < bounds[k+1]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

G_IN_C, G_IN_H, G_IN_W, G_OUT_C, G_OUT_H, G_OUT_W, G_KH, G_KW, G_STRIDE, G_PAD, G_POOL = range(11)


@njit(cache=True)
def _ceil_div(a, b):
    return -((-a) // b)


@njit(cache=True)
def _target_box(g, c, y, x):
    """Output rows [oy0, oy1), cols [ox0, ox1), channels [oc0, oc1) reached by source (c, y, x)."""
    kh, kw, s, pad = g[G_KH], g[G_KW], g[G_STRIDE], g[G_PAD]
    oy0 = max(_ceil_div(y + pad - kh + 1, s), 0)
    oy1 = min((y + pad) // s + 1, g[G_OUT_H])
    ox0 = max(_ceil_div(x + pad - kw + 1, s), 0)
    ox1 = min((x + pad) // s + 1, g[G_OUT_W])
    if g[G_POOL] != 0:
        oc0, oc1 = c, c + 1
    else:
        oc0, oc1 = 0, g[G_OUT_C]
    return oy0, max(oy1, oy0), ox0, max(ox1, ox0), oc0, oc1


@njit(cache=True)
def _core_of(bounds, nid):
    return np.searchsorted(bounds, nid, side="right") - 1


@njit(cache=True)
def input_axon_counts(g, bounds):
    """Distinct presynaptic sources (input axon slots) of each core's neuron range.

    Returns int64[n_cores]. Conv: every input channel of each receptive-field position;
    pooling: only the neuron's own channel.
    """
    n_cores = bounds.shape[0] - 1
    in_c, in_h, in_w = g[G_IN_C], g[G_IN_H], g[G_IN_W]
    out_c, out_w = g[G_OUT_C], g[G_OUT_W]
    kh, kw, s, pad = g[G_KH], g[G_KW], g[G_STRIDE], g[G_PAD]
    pool = g[G_POOL] != 0
    out = np.zeros(n_cores, np.int64)
    mark = np.full(in_c * in_h * in_w, -1, np.int64)
    for k in range(n_cores):
        count = 0
        for nid in range(bounds[k], bounds[k + 1]):
            oc = nid % out_c
            pos = nid // out_c
            ox = pos % out_w
            oy = pos // out_w
            if not pool and oc != 0 and nid != bounds[k]:
                continue  # conv: same receptive field for every channel of a position
            for ky in range(kh):
                iy = oy * s - pad + ky
                if iy < 0 or iy >= in_h:
                    continue
                for kx in range(kw):
                    ix = ox * s - pad + kx
                    if ix < 0 or ix >= in_w:
                        continue
                    if pool:
                        src = (iy * in_w + ix) * in_c + oc
                        if mark[src] != k:
                            mark[src] = k
                            count += 1
                    else:
                        src = (iy * in_w + ix) * in_c
                        if mark[src] != k:
                            mark[src] = k
                            count += in_c
        out[k] = count
    return out


@njit(cache=True)
def output_axon_counts(g, src_bounds, dst_bounds):
    """Output axon slots per source core: sum over its neurons of distinct destination cores.

    ``g`` is the consumer layer's geometry (its input is the source layer's output).
    Returns int64[n_src_cores].
    """
    n_src = src_bounds.shape[0] - 1
    in_c, in_w = g[G_IN_C], g[G_IN_W]
    out_c, out_w = g[G_OUT_C], g[G_OUT_W]
    out = np.zeros(n_src, np.int64)
    for k in range(n_src):
        total = 0
        for nid in range(src_bounds[k], src_bounds[k + 1]):
            c = nid % in_c
            pos = nid // in_c
            x = pos % in_w
            y = pos // in_w
            oy0, oy1, ox0, ox1, oc0, oc1 = _target_box(g, c, y, x)
            if oy0 >= oy1 or ox0 >= ox1:
                continue
            d = _core_of(dst_bounds, (oy0 * out_w + ox0) * out_c + oc0)
            total += 1
            for oy in range(oy0, oy1):  # targets come in increasing id order: walk the cores
                for ox in range(ox0, ox1):
                    base = (oy * out_w + ox) * out_c
                    for oc in range(oc0, oc1):
                        while base + oc >= dst_bounds[d + 1]:
                            d += 1
                            if base + oc < dst_bounds[d + 1]:
                                total += 1
        out[k] = total
    return out


@njit(cache=True)
def count_traffic_(step, row0, nid, src_tx, src_ty, g, dst_bounds, dst_tx, dst_ty, t_ew_ns, t_ns_ns,
                   t_tile_ns, last_step, syn_ops, active, msgs_in, msgs_per_spike, hops_ew, hops_ns, within_tile,
                   route_max_ns):
    """Count what each spike of a source layer costs in its consumer layer (mutates outputs).

    Per spike i at global timestep ``step[i]`` (non-decreasing; output row ``step[i] - row0``)
    from source neuron ``nid[i]`` on tile (``src_tx[i]``, ``src_ty[i]``):

    - ``syn_ops[row, core]`` += targets on that destination core (the spike's fan-out);
    - ``active[row, core]`` += targets not yet touched in that row (``last_step`` holds, per
      consumer neuron, the last global step it was touched; pass -1 initially, keep it between calls);
    - one message per distinct destination core: ``msgs_in[row, core]`` += 1,
      ``msgs_per_spike[i]`` += 1, hops under X-then-Y routing ``|dx|`` -> ``hops_ew[row]``,
      ``|dy|`` -> ``hops_ns[row]``; same tile -> ``within_tile[row]``;
      ``route_max_ns[row]`` = max over messages of ``|dx|*t_ew + |dy|*t_ns`` (or ``t_tile``).
    """
    in_c, in_w = g[G_IN_C], g[G_IN_W]
    out_c, out_w = g[G_OUT_C], g[G_OUT_W]
    for i in range(step.shape[0]):
        st = step[i]
        row = st - row0
        n = nid[i]
        c = n % in_c
        pos = n // in_c
        x = pos % in_w
        y = pos // in_w
        oy0, oy1, ox0, ox1, oc0, oc1 = _target_box(g, c, y, x)
        if oy0 >= oy1 or ox0 >= ox1:
            continue
        k = _core_of(dst_bounds, (oy0 * out_w + ox0) * out_c + oc0)
        last_core = -1
        sx = src_tx[i]
        sy = src_ty[i]
        for oy in range(oy0, oy1):
            for ox in range(ox0, ox1):
                base = (oy * out_w + ox) * out_c
                for oc in range(oc0, oc1):
                    t = base + oc
                    while t >= dst_bounds[k + 1]:
                        k += 1
                    syn_ops[row, k] += 1
                    if last_step[t] != st:
                        last_step[t] = st
                        active[row, k] += 1
                    if k != last_core:
                        last_core = k
                        msgs_in[row, k] += 1
                        msgs_per_spike[i] += 1
                        dx = abs(dst_tx[k] - sx)
                        dy = abs(dst_ty[k] - sy)
                        if dx == 0 and dy == 0:
                            within_tile[row] += 1
                            lat = t_tile_ns
                        else:
                            hops_ew[row] += dx
                            hops_ns[row] += dy
                            lat = dx * t_ew_ns + dy * t_ns_ns
                        if lat > route_max_ns[row]:
                            route_max_ns[row] = lat

