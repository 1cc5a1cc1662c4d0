"""The one event model of spikeflow.

Events are numpy structured arrays with tonic's field names, so any ``tonic.transforms``
transform accepts them: ``t`` int64 microseconds on the sensor clock, ``x``/``y`` pixel
coordinates, ``p`` polarity (0 = OFF, 1 = ON) or, for spike trains out of a layer, the
feature-map index (int16: hundreds of maps).

Time slicing is half-open ``[t0, t1)`` and binary-searched on ``t``; slices are views.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i2")])
"""Packed, little-endian, 14 bytes per event. Field order t, x, y, p."""


class SensorSize(NamedTuple):
    """(width, height, channels), as tonic orders ``sensor_size``."""

    width: int
    height: int
    channels: int = 2


def empty(n: int = 0) -> np.ndarray:
    """A zeroed event array of length ``n``."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_events(t, x, y, p) -> np.ndarray:
    """Build an event array from four equal-length sequences (cast to the event dtype)."""
    t = np.asarray(t)
    n = t.shape[0]
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["t"] = t
    ev["x"] = x
    ev["y"] = y
    ev["p"] = p
    return ev


def as_events(arr: np.ndarray) -> np.ndarray:
    """Convert any structured array with t/x/y/p fields (tonic's, expelliarmus's...) to ours.

    Returns ``arr`` itself when it already has our dtype (no copy).
    """
    if arr.dtype == EVENT_DTYPE:
        return arr
    names = arr.dtype.names or ()
    missing = [f for f in ("t", "x", "y", "p") if f not in names]
    if missing:
        raise ValueError(f"event array lacks fields {missing}; has {list(names)}")
    return make_events(arr["t"], arr["x"], arr["y"], arr["p"])


def time_slice(events: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """Events with ``t0 <= t < t1`` as a view (``events`` must be sorted by ``t``)."""
    t = events["t"]
    i0 = int(np.searchsorted(t, t0, side="left"))
    i1 = int(np.searchsorted(t, t1, side="left"))
    return events[i0:i1]


def window_bounds(events: np.ndarray, window_us: int, t_start: int | None = None) -> np.ndarray:
    """Index boundaries splitting sorted ``events`` into consecutive windows of ``window_us``.

    Returns ``(edges_t, idx)`` stacked as an (N+1, 2) int64 array: row k is (window start time,
    first index). Window k is ``events[idx[k]:idx[k+1]]``, covering ``[edges_t[k], edges_t[k+1])``.
    """
    if window_us <= 0:
        raise ValueError(f"window_us must be > 0, got {window_us}")
    t = events["t"]
    if len(t) == 0:
        return np.zeros((1, 2), dtype=np.int64)
    start = int(t[0]) if t_start is None else int(t_start)
    n_win = max(1, int((int(t[-1]) - start) // window_us) + 1)
    edges = start + window_us * np.arange(n_win + 1, dtype=np.int64)
    idx = np.searchsorted(t, edges, side="left").astype(np.int64)
    return np.stack([edges, idx], axis=1)


def is_sorted(events: np.ndarray) -> bool:
    """True when timestamps never go backwards."""
    t = events["t"]
    return bool(len(t) < 2 or np.all(t[1:] >= t[:-1]))
