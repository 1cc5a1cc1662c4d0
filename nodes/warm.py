"""Load a node's numba kernels in ``setup``, before its stream starts.

numba loads a kernel (from its cache, or compiles it) at its first call, and the first numba
call of a process also initialises numba itself (its typing and lowering registries, which
import scipy.linalg for BLAS): measured in a fresh worker process, the first packet through
``snn_conv`` took 0.35-0.41 s, the next ones 0.1-0.3 ms. A worker says hello (and its sources
start) after ``setup``, and the supervisor's warm spare runs ``setup`` ahead of a restart, so
paying there keeps that stall out of the stream's latency.

Types matter, not values: a kernel has one compiled version per argument type signature, and
arrays that arrive zero-copy off a socket are read-only, a different type from the writable
arrays of an in-process chain. So every probe also goes through read-only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np

from spikeflow.service.packet import Packet


def read_only(packet: Packet) -> Packet:
    """``packet`` with a read-only copy of its events, as a receiver decodes it off a socket."""
    if packet.events is None:
        return packet
    ev = packet.events.copy()
    ev.setflags(write=False)
    return packet.with_events(ev)


def warm_kernels(node, port: str, probes: Iterable[Packet]) -> None:
    """Run ``probes`` (each writable and read-only) through a throwaway copy of ``node``,
    then flush it: the kernels they reach are loaded now. ``node`` itself is untouched
    (state, counters, sequence numbers)."""
    scratch = copy.deepcopy(node)
    for p in probes:
        for variant in (p, read_only(p)):
            scratch.process(port, variant)
    scratch.flush()


def every_pixel(shape_chw: tuple[int, int, int], t_us: int = 0) -> np.ndarray:
    """One event per (channel, y, x) at ``t_us``: a probe dense enough for any dense path."""
    from spikeflow.service.events import EVENT_DTYPE

    c, h, w = (int(v) for v in shape_chw)
    ev = np.zeros(c * h * w, EVENT_DTYPE)
    p, y, x = np.unravel_index(np.arange(c * h * w), (c, h, w))
    ev["p"], ev["y"], ev["x"], ev["t"] = p, y, x, t_us
    return ev
