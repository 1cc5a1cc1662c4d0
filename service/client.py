"""Client library: subscribe to a graph's ``publish`` node, push events into its ``zmq_input``.

Subscribe (gap detection, liveness from heartbeats, lag detection)::

    from spikeflow.service.client import Subscriber

    with Subscriber("tcp://127.0.0.1:5557", topics=[b"classifier"]) as sub:
        for pkt in sub:                       # ends at the publisher's end-of-stream
            print(pkt.kind, pkt.seq, pkt.count, pkt.data)
        print(sub.gaps, sub.rejects.as_dict())

Push (e.g. from a camera bridge)::

    from spikeflow.service.client import Pusher

    with Pusher("tcp://127.0.0.1:5560") as push:
        push.push(events, sensor_size=(128, 128, 2))     # EVENT_DTYPE array; seq is automatic
        push.end()                                       # optional end-of-stream marker

Both speak wire protocol v1 (docs/protocol.md), so a C++ or JavaScript peer can replace either.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np
import zmq

from .errors import SpikeflowError
from .events import EVENT_DTYPE, SensorSize
from .packet import Packet, now_ns
from .protocol import (RejectCounter, SeqTracker, receiving_socket_options, recv_packet, send_packet)


class LagError(SpikeflowError):
    """A subscriber fell further behind than it allows (the zguide's Suicidal Snail)."""


class Subscriber:
    """SUB client of a ``publish`` node.

    * ``recv(timeout_ms)`` returns the next data packet or None; iteration yields packets until
      the publisher signals end-of-stream (or :meth:`close`).
    * ``gaps``: missing packets per stream, from ``seq`` (drops upstream or at our queue);
      heartbeats carry the publisher's last seq, so drops at the end of a stream count too.
    * ``alive``: a message arrived within ``liveness`` heartbeat intervals (Paranoid Pirate).
    * ``lag_ns``: age of the last data packet (now - its source time). With ``max_lag_ms`` set,
      a subscriber that falls further behind raises :class:`LagError` instead of silently
      serving stale data (Suicidal Snail).
    """

    def __init__(self, endpoint: str, topics: Iterable[bytes] = (b"",), *, rcvhwm: int = 1000,
                 liveness: int = 3, heartbeat_ms: int = 1000, max_lag_ms: float | None = None,
                 context: zmq.Context | None = None):
        self.endpoint = endpoint
        self._sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        receiving_socket_options(self._sock)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode() if isinstance(topic, str) else topic)
        self._sock.connect(endpoint)
        self.liveness = int(liveness)
        self.heartbeat_ms = float(heartbeat_ms)
        self.max_lag_ns = None if max_lag_ms is None else int(max_lag_ms * 1e6)
        self.rejects = RejectCounter()
        self._seqs = SeqTracker()
        self.received = 0
        self.heartbeats = 0
        self.ended = False
        self.lag_ns: int | None = None
        self._last_msg: float | None = None

    @property
    def gaps(self) -> dict[str, int]:
        """Missing packets per stream name."""
        return self._seqs.snapshot()

    @property
    def missing(self) -> int:
        return self._seqs.missing

    @property
    def alive(self) -> bool:
        """True while messages (data or heartbeats) keep arriving in time."""
        return (self._last_msg is not None
                and time.monotonic() - self._last_msg < self.liveness * self.heartbeat_ms / 1e3)

    def recv(self, timeout_ms: float | None = None) -> Packet | None:
        """Next data packet, or None after ``timeout_ms`` (heartbeats are consumed silently)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1e3
        while True:
            wait = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1e3))
            if not self._sock.poll(wait, zmq.POLLIN):
                return None
            got = recv_packet(self._sock, zmq.NOBLOCK, self.rejects)
            if got is None:
                continue
            self._last_msg = time.monotonic()
            pkt = got[1]
            if pkt.kind == "heartbeat":
                self._heartbeat(pkt)
                if self.ended:
                    return None
                continue
            self.received += 1
            self._seqs.update(pkt.stream, pkt.seq)
            self.lag_ns = now_ns() - pkt.sent_ns
            if self.max_lag_ns is not None and self.lag_ns > self.max_lag_ns:
                raise LagError(f"{self.endpoint}: stream {pkt.stream!r} seq {pkt.seq} is "
                               f"{self.lag_ns / 1e6:.1f} ms old > max_lag_ms {self.max_lag_ns / 1e6:g}")
            return pkt

    def _heartbeat(self, pkt: Packet) -> None:
        self.heartbeats += 1
        interval = pkt.data.get("interval_ms")
        if isinstance(interval, (int, float)) and interval > 0:
            self.heartbeat_ms = float(interval)
        streams = pkt.data.get("streams")
        if isinstance(streams, dict):
            for stream, last in streams.items():
                seen = self._seqs.last_seq(stream)
                if isinstance(last, int) and seen is not None and last > seen:
                    # the tail of the stream never arrived: count it as a gap
                    self._seqs.update(stream, last)
                    self._seqs.add_gap(stream, 1)
        if pkt.data.get("eos"):
            self.ended = True

    def __iter__(self) -> Iterator[Packet]:
        """Packets until the publisher's end-of-stream (polls so :meth:`close` can end it)."""
        while not self.ended and not self._sock.closed:
            pkt = self.recv(100)
            if pkt is not None:
                yield pkt

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Pusher:
    """PUSH client feeding a ``zmq_input`` node; sequence numbers are automatic.

    ``push`` waits up to ``timeout_ms`` when the input is not keeping up (or not there yet),
    then raises ``TimeoutError`` naming the endpoint.
    """

    def __init__(self, endpoint: str, *, stream: str = "pusher", sndhwm: int = 100,
                 timeout_ms: int = 10_000, context: zmq.Context | None = None):
        self.endpoint = endpoint
        self.stream = stream
        self._sock = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        self._sock.setsockopt(zmq.LINGER, 2000)
        self._sock.connect(endpoint)
        self.seq = 0

    def push(self, events: np.ndarray, sensor_size, t0_us: int | None = None, t1_us: int | None = None,
             *, sent_ns: int | None = None, kind: str = "events") -> Packet:
        """Send ``events`` (EVENT_DTYPE) as one packet; the window defaults to the events' span."""
        if events.dtype != EVENT_DTYPE:
            raise ValueError(f"events must have EVENT_DTYPE, got {events.dtype}")
        if t0_us is None:
            t0_us = int(events["t"][0]) if len(events) else 0
        if t1_us is None:
            t1_us = int(events["t"][-1]) + 1 if len(events) else t0_us
        pkt = Packet(kind, self.stream, self.seq, SensorSize(*sensor_size), int(t0_us), int(t1_us),
                     now_ns() if sent_ns is None else int(sent_ns), events)
        return self.push_packet(pkt)

    def push_packet(self, packet: Packet) -> Packet:
        """Send a ready-made packet (its seq is replaced by ours)."""
        packet.seq, packet.stream = self.seq, packet.stream or self.stream
        try:
            send_packet(self._sock, packet)
        except zmq.Again:
            raise TimeoutError(f"{self.endpoint}: push of seq {self.seq} timed out (is zmq_input running?)") from None
        self.seq += 1
        return packet

    def end(self) -> None:
        """Signal end-of-stream (a ``zmq_input`` with ``stop_on_eos`` ends its stream)."""
        self.push_packet(Packet("heartbeat", self.stream, sent_ns=now_ns(), data={"eos": True}))

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
