"""Slow, obviously-correct twins of the Loihi emulator kernels (``nodes/loihi_kernels.py``).

Connectivity is found by brute force: a source (c, y, x) reaches output (oc, oy, ox) when it
lies inside that output's receptive field — checked for every output, no index arithmetic.
"""

from __future__ import annotations

import numpy as np


def unpack(g):
    keys = ("in_c", "in_h", "in_w", "out_c", "out_h", "out_w", "kh", "kw", "stride", "pad", "pool")
    return dict(zip(keys, (int(v) for v in g)))


def receptive_field(g, oc, oy, ox):
    """Every source (c, y, x) feeding output (oc, oy, ox)."""
    d = unpack(g)
    out = []
    for ky in range(d["kh"]):
        for kx in range(d["kw"]):
            y = oy * d["stride"] - d["pad"] + ky
            x = ox * d["stride"] - d["pad"] + kx
            if 0 <= y < d["in_h"] and 0 <= x < d["in_w"]:
                chans = [oc] if d["pool"] else range(d["in_c"])
                out += [(c, y, x) for c in chans]
    return out


def reaches(d, c, y, x, oc, oy, ox):
    """Source (c, y, x) lies in the receptive field of output (oc, oy, ox)."""
    ky = y - (oy * d["stride"] - d["pad"])
    kx = x - (ox * d["stride"] - d["pad"])
    return 0 <= ky < d["kh"] and 0 <= kx < d["kw"] and (not d["pool"] or oc == c)


def targets(g, c, y, x):
    """Every output neuron id (y, x, c order) that source (c, y, x) reaches, ascending."""
    d = unpack(g)
    hits = []
    for oy in range(d["out_h"]):
        for ox in range(d["out_w"]):
            for oc in range(d["out_c"]):
                if reaches(d, c, y, x, oc, oy, ox):
                    hits.append((oy * d["out_w"] + ox) * d["out_c"] + oc)
    return sorted(hits)


def core_of(bounds, nid):
    for k in range(len(bounds) - 1):
        if bounds[k] <= nid < bounds[k + 1]:
            return k
    raise ValueError(nid)


def input_axon_counts(g, bounds):
    d = unpack(g)
    out = []
    for k in range(len(bounds) - 1):
        sources = set()
        for nid in range(bounds[k], bounds[k + 1]):
            oc, pos = nid % d["out_c"], nid // d["out_c"]
            sources.update(receptive_field(g, oc, pos // d["out_w"], pos % d["out_w"]))
        out.append(len(sources))
    return np.array(out)


def output_axon_counts(g, src_bounds, dst_bounds):
    d = unpack(g)
    out = []
    for k in range(len(src_bounds) - 1):
        total = 0
        for nid in range(src_bounds[k], src_bounds[k + 1]):
            c, pos = nid % d["in_c"], nid // d["in_c"]
            total += len({core_of(dst_bounds, t) for t in targets(g, c, pos // d["in_w"], pos % d["in_w"])})
        out.append(total)
    return np.array(out)


def count_traffic(step, row0, nid, src_tx, src_ty, g, dst_bounds, dst_tx, dst_ty, t_ew, t_ns, t_tile, n_rows):
    """Per-row/per-core counts of the spikes, as plain dicts of numpy arrays."""
    d = unpack(g)
    n_cores = len(dst_bounds) - 1
    syn = np.zeros((n_rows, n_cores), np.int64)
    active = np.zeros_like(syn)
    msgs_in = np.zeros_like(syn)
    per_spike = np.zeros(len(nid), np.int64)
    hops_ew = np.zeros(n_rows, np.int64)
    hops_ns = np.zeros(n_rows, np.int64)
    within = np.zeros(n_rows, np.int64)
    route = np.zeros(n_rows)
    touched: dict[int, set] = {}
    for i, (st, n) in enumerate(zip(step, nid)):
        row = int(st) - row0
        c, pos = int(n) % d["in_c"], int(n) // d["in_c"]
        tg = targets(g, c, pos // d["in_w"], pos % d["in_w"])
        cores = {}
        for t in tg:
            k = core_of(dst_bounds, t)
            cores[k] = cores.get(k, 0) + 1
            syn[row, k] += 1
            if t not in touched.setdefault(int(st), set()):
                touched[int(st)].add(t)
                active[row, k] += 1
        for k in cores:
            msgs_in[row, k] += 1
            per_spike[i] += 1
            dx, dy = abs(int(dst_tx[k]) - int(src_tx[i])), abs(int(dst_ty[k]) - int(src_ty[i]))
            if dx == 0 and dy == 0:
                within[row] += 1
                lat = t_tile
            else:
                hops_ew[row] += dx
                hops_ns[row] += dy
                lat = dx * t_ew + dy * t_ns
            route[row] = max(route[row], lat)
    return {"syn_ops": syn, "active": active, "msgs_in": msgs_in, "msgs_per_spike": per_spike,
            "hops_ew": hops_ew, "hops_ns": hops_ns, "within_tile": within, "route_max_ns": route}

