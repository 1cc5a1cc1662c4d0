"""Packets: what flows along graph edges and over the wire.

A packet is an event array (a view, never a copy when slicing) plus stream metadata. Other
kinds (labels, metrics, heartbeat) carry a small msgpack-able ``data`` dict instead of, or
beside, the array payload.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .events import EVENT_DTYPE, SensorSize, time_slice

KINDS = ("events", "spikes", "labels", "metrics", "heartbeat")
"""Packet kinds. ``spikes`` are events whose ``p`` is a feature-map index."""


def now_ns() -> int:
    """Wall-clock time in ns (the clock used for latency accounting across processes)."""
    return time.time_ns()


@dataclass
class Packet:
    """One unit of data on an edge.

    Attributes:
        kind: one of ``KINDS``.
        stream: name of the producing stream (usually ``node.port``).
        seq: per-stream sequence number, starting at 0; gaps reveal drops.
        sensor_size: (W, H, C) of the coordinate space of ``events``.
        t0_us, t1_us: half-open window ``[t0, t1)`` on the sensor clock.
        sent_ns: wall-clock time the data entered the graph (source time), for latency.
        events: structured event array (``EVENT_DTYPE``) for events/spikes, else None.
        data: extra msgpack-able fields (labels: class, confidence, scores; metrics: counters).
    """

    kind: str = "events"
    stream: str = ""
    seq: int = 0
    sensor_size: SensorSize = SensorSize(0, 0, 0)
    t0_us: int = 0
    t1_us: int = 0
    sent_ns: int = 0
    events: np.ndarray | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown packet kind {self.kind!r}; expected one of {KINDS}")
        if not isinstance(self.sensor_size, SensorSize):
            self.sensor_size = SensorSize(*self.sensor_size)

    @property
    def count(self) -> int:
        return 0 if self.events is None else len(self.events)

    def with_events(self, events: np.ndarray, **changes) -> "Packet":
        """A copy of this packet's metadata around new events (e.g. a filter's output).

        Without ``changes`` the fields are copied as they are (already checked when this
        packet was made): about a tenth of ``dataclasses.replace``'s cost, which is paid per
        node and per packet."""
        if changes:
            return replace(self, events=events, **changes)
        fields = self.__dict__.copy()
        fields["events"] = events
        packet = _new(type(self))
        packet.__dict__ = fields
        return packet

    def slice(self, t0_us: int, t1_us: int) -> "Packet":
        """Sub-packet for ``[t0, t1)`` (a view of the events; window clipped to this packet's)."""
        t0 = max(t0_us, self.t0_us)
        t1 = min(t1_us, self.t1_us)
        ev = time_slice(self.events, t0, t1) if self.events is not None else None
        return replace(self, events=ev, t0_us=t0, t1_us=max(t0, t1))


_new = object.__new__


def is_eos(packet: Packet) -> bool:
    """``packet`` is an end-of-stream marker: a heartbeat whose data says ``eos`` (protocol §3)."""
    return packet.kind == "heartbeat" and bool(packet.data.get("eos"))


def events_packet(events: np.ndarray, stream: str, seq: int, sensor_size, t0_us: int, t1_us: int,
                  sent_ns: int | None = None, kind: str = "events") -> Packet:
    """Convenience constructor for an events/spikes packet."""
    if events.dtype != EVENT_DTYPE:
        raise ValueError(f"events must have EVENT_DTYPE, got {events.dtype}")
    return Packet(kind=kind, stream=stream, seq=seq, sensor_size=SensorSize(*sensor_size),
                  t0_us=int(t0_us), t1_us=int(t1_us),
                  sent_ns=now_ns() if sent_ns is None else int(sent_ns), events=events)
