"""Slow, obviously-correct twins of ``spikeflow.nodes.filter_kernels`` (one Python loop per event)."""

from __future__ import annotations

import numpy as np

NEVER_US = -(1 << 62)


def background_activity(events, sensor_size, window_us, radius=1, eight=True, last=None):
    """Keep an event when any neighbour (not itself) fired in ``[t - window_us + 1, t]``."""
    w, h = sensor_size[0], sensor_size[1]
    last = {} if last is None else last
    keep = []
    for e in events:
        x, y, t = int(e["x"]), int(e["y"]), int(e["t"])
        if not (0 <= x < w and 0 <= y < h):
            keep.append(False)
            continue
        ok = False
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if (dx, dy) == (0, 0) or (not eight and dx and dy):
                    continue
                nb = last.get((x + dx, y + dy))
                if nb is not None and 0 <= t - nb < window_us:
                    ok = True
        keep.append(ok)
        last[(x, y)] = t
    return np.array(keep, dtype=bool)


def refractory(events, sensor_size, refractory_us, last=None):
    """Keep an event when its pixel's last kept event is >= refractory_us older."""
    w, h = sensor_size[0], sensor_size[1]
    last = {} if last is None else last
    keep = []
    for e in events:
        x, y, t = int(e["x"]), int(e["y"]), int(e["t"])
        if not (0 <= x < w and 0 <= y < h):
            keep.append(False)
            continue
        prev = last.get((x, y))
        ok = prev is None or t - prev >= refractory_us
        if ok:
            last[(x, y)] = t
        keep.append(ok)
    return np.array(keep, dtype=bool)
