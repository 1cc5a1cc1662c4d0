"""Graph nodes that talk to the outside over ZeroMQ: ``zmq_input`` (a source) and ``publish`` (a sink).

``zmq_input`` binds (or connects) a PULL socket — or a SUB socket — and turns every valid
protocol-v1 events packet into a packet on ``events_out``. Anything else (garbage, a wrong
sensor size, coordinates outside the sensor, unsorted timestamps) is rejected and counted in
``stats()``; the node never crashes on input.

``publish`` sends every packet it receives on an XPUB socket (PUB semantics plus visibility of
subscriptions) and heartbeats on every subscribed topic, so subscribers can tell a quiet
publisher from a dead one (the zguide's Paranoid Pirate). Its ``policy``:

* ``realtime``: a subscriber whose queue (``sndhwm`` messages) is full makes the packet drop,
  counted. ``ZMQ_XPUB_NODROP`` turns ZeroMQ's silent PUB drop into a visible EAGAIN we count;
* ``lossless``: the same EAGAIN makes ``process`` wait (backpressure up the graph), stop-aware.

``publish`` never sends a packet of a replayable stream twice (a resumed source's repeats,
:mod:`spikeflow.service.repeats`): it drops one whose seq it has already published, counted in
``duplicates_dropped``, so a subscriber sees each packet once. That holds across a restart of
its own worker too (the common case: the resumed source is in the same worker): under the
daemon it keeps the last seq it handled per replayable stream in a memory-mapped file
(:mod:`spikeflow.service.sent_seqs`), which a ``kill -9`` leaves intact, and its successor
starts from it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zmq

from spikeflow.nodes.base import Node, PortMeta, Source, param
from spikeflow.service.errors import ParamError
from spikeflow.service.events import SensorSize
from spikeflow.service.packet import Packet, now_ns
from spikeflow.service.protocol import (RejectCounter, SeqTracker, encode, receiving_socket_options,
                                        recv_packet)
from spikeflow.service.registry import register
from spikeflow.service.repeats import RepeatFilter
from spikeflow.service.sent_seqs import SentSeqs, SeqFileError, read_seqs

log = logging.getLogger("spikeflow.publish")

INPUT_REJECTS = ("unexpected_kind", "sensor_size", "out_of_bounds", "unsorted", "window")
"""Reasons ``zmq_input`` adds to the protocol's own when it refuses a well-formed packet."""


@dataclass(frozen=True)
class ZmqInputParams:
    endpoint: str = param("tcp://127.0.0.1:5560", "where events are pushed in (tcp://, ipc://, inproc://)")
    bind: bool = param(True, "bind the endpoint (true) or connect to it (false)")
    socket: str = param("pull", "pull: for Pusher clients; sub: subscribe to a publisher", choices=("pull", "sub"))
    topic: str = param("", "topic prefix to subscribe to (socket = sub)")
    sensor_size: tuple[int, int, int] = param((128, 128, 2), "(W, H, C) that incoming packets must declare")
    kind: str = param("events", "packet kind accepted and emitted", choices=("events", "spikes"))
    check_events: bool = param(True, "reject packets with x/y/p outside sensor_size, unsorted t, "
                                     "or t outside the packet window")
    poll_ms: int = param(100, "poll timeout: the longest a stop request waits", min=1, max=10_000)
    rcvhwm: int = param(1000, "receive queue length in messages", min=1)
    stop_on_eos: bool = param(False, "end the stream when a sender signals end-of-stream")


def events_problem(pkt: Packet, size: SensorSize) -> str | None:
    """Why ``pkt``'s events are unsafe for downstream kernels, or None (vectorised checks)."""
    ev = pkt.events
    if len(ev) == 0:
        return None
    x, y, p, t = ev["x"], ev["y"], ev["p"], ev["t"]
    if (x.min() < 0 or x.max() >= size.width or y.min() < 0 or y.max() >= size.height
            or p.min() < 0 or p.max() >= max(size.channels, 1)):
        return "out_of_bounds"
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        return "unsorted"
    if t[0] < pkt.t0_us or t[-1] >= pkt.t1_us:
        return "window"
    return None


@register
class ZmqInput(Source):
    """Events pushed in by another process (a camera bridge, a robot, ``client.Pusher``)."""

    type_name = "zmq_input"
    Params = ZmqInputParams
    outputs = {"events_out": "events"}

    def __init__(self, name: str, params: ZmqInputParams | None = None):
        super().__init__(name, params)
        self.size = SensorSize(*self.params.sensor_size)
        if min(self.size) <= 0:
            raise ParamError(f"nodes.{name}.params.sensor_size", f"must be positive, got {list(self.params.sensor_size)}")
        self.rejects = RejectCounter()
        self.seqs = SeqTracker()
        self.received = 0
        self.heartbeats = 0
        self.eos = False
        self._seq = 0
        self._sock: zmq.Socket | None = None
        self.endpoint = self.params.endpoint

    def setup(self, meta: dict[str, PortMeta]) -> dict[str, PortMeta]:
        self._open()
        return {"events_out": PortMeta(self.params.kind, self.size)}

    def _open(self) -> zmq.Socket:
        if self._sock is None:
            p = self.params
            sock = zmq.Context.instance().socket(zmq.PULL if p.socket == "pull" else zmq.SUB)
            sock.setsockopt(zmq.RCVHWM, p.rcvhwm)
            sock.setsockopt(zmq.LINGER, 0)
            receiving_socket_options(sock)
            if p.socket == "sub":
                sock.setsockopt(zmq.SUBSCRIBE, p.topic.encode())
            sock.bind(p.endpoint) if p.bind else sock.connect(p.endpoint)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT) if p.bind else p.endpoint
            self._sock = sock
        return self._sock

    def packets(self) -> Iterator[tuple[str, Packet]]:
        sock = self._open()
        while not self.stopping:
            if not sock.poll(self.params.poll_ms, zmq.POLLIN):
                continue
            pkts, ended = self.take_nowait()
            yield from pkts
            if ended:
                return

    def pollable(self) -> zmq.Socket:
        """The socket :meth:`packets` waits on. A runtime polling it with its other inputs calls
        :meth:`take_nowait` on POLLIN instead of running :meth:`packets` in a thread of its own
        (the worker does: no hand-over between threads, no contention for the GIL)."""
        return self._open()

    def take_nowait(self, limit: int = 32) -> tuple[list[tuple[str, Packet]], bool]:
        """What :meth:`packets` would yield next, without waiting: at most ``limit`` packets
        already queued, and whether the stream has ended (stopped, or end-of-stream received
        with ``stop_on_eos``)."""
        sock = self._open()
        out: list[tuple[str, Packet]] = []
        while len(out) < limit and not self.stopping:
            try:
                got = recv_packet(sock, zmq.NOBLOCK, self.rejects)
            except zmq.Again:
                break
            if got is None:
                continue
            pkt = self._accept(got[1])
            if pkt is not None:
                out.append(("events_out", pkt))
            elif self.eos and self.params.stop_on_eos:
                return out, True
        return out, self.stopping

    def _accept(self, pkt: Packet) -> Packet | None:
        """The outgoing packet for a received one, or None (heartbeat, or rejected and counted)."""
        if pkt.kind == "heartbeat":
            self.heartbeats += 1
            self.eos = self.eos or bool(pkt.data.get("eos"))
            return None
        reason = None
        if pkt.kind != self.params.kind:
            reason = "unexpected_kind"
        elif pkt.sensor_size != self.size:
            reason = "sensor_size"
        elif self.params.check_events:
            reason = events_problem(pkt, self.size)
        if reason is not None:
            self.rejects.count(reason, f"{self.endpoint}: packet {pkt.stream!r} seq {pkt.seq}: {reason}")
            return None
        self.seqs.update(pkt.stream, pkt.seq)
        self.received += 1
        out = Packet(self.params.kind, f"{self.name}.events_out", self._seq, self.size,
                     pkt.t0_us, pkt.t1_us, pkt.sent_ns, pkt.events)
        self._seq += 1
        return out

    def stats(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "received": self.received, "heartbeats": self.heartbeats,
                "rejected": self.rejects.as_dict(), "rejected_total": self.rejects.total,
                "last_reject": self.rejects.last_error, "gaps_in": self.seqs.missing, "eos": self.eos}

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None


@dataclass(frozen=True)
class PublishParams:
    endpoint: str = param("tcp://127.0.0.1:5557", "PUB endpoint subscribers connect to")
    bind: bool = param(True, "bind the endpoint (true) or connect to it (false)")
    topic: str = param("", "topic of every message; empty: the packet's stream name")
    policy: str = param("realtime", "realtime: drop (counted) when a subscriber is slow; "
                                    "lossless: wait for it", choices=("realtime", "lossless"))
    sndhwm: int = param(64, "per-subscriber queue length in messages", min=1)
    heartbeat_ms: int = param(1000, "heartbeat period; 0 disables heartbeats", min=0, max=3_600_000)
    max_age_ms: float = param(0.0, "realtime: drop packets older than this (source time); 0 = never", min=0)
    min_subscribers: int = param(0, "wait for this many subscriptions before the first packet", min=0)
    wait_subscribers_ms: int = param(10_000, "longest wait for min_subscribers", min=0)
    linger_ms: int = param(2000, "on close, time allowed to deliver queued messages", min=0)


@register
class Publish(Node):
    """Publishes packets (any kind) to subscribers (``client.Subscriber``), with heartbeats."""

    type_name = "publish"
    Params = PublishParams
    inputs = {"events_in": "any"}
    outputs: dict[str, str] = {}
    is_sink = True

    def __init__(self, name: str, params: PublishParams | None = None):
        super().__init__(name, params)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: zmq.Socket | None = None
        self._hb_thread: threading.Thread | None = None
        self._subs: dict[bytes, int] = {}
        self.subscriptions_seen = 0
        self.sent = 0
        self.dropped_slow = 0
        self.dropped_late = 0
        self.heartbeats = 0
        self.wait_ns = 0
        self._waiting_since: int | None = None  # a wait in progress counts in stats() too
        self._last_seq: dict[str, int] = {}
        self._hb_seq = 0
        self._repeats = RepeatFilter()
        self._sent_seqs: SentSeqs | None = None   # what a successor must not publish again
        self.restored_seqs: dict[str, int] | None = None   # what a predecessor had handled
        self.endpoint = self.params.endpoint

    def setup(self, meta: dict[str, PortMeta]) -> dict[str, PortMeta]:
        self._open()
        return {}

    def set_replayable_streams(self, streams) -> None:
        """Streams whose ``(stream, seq)`` identifies a packet: their repeats are not published."""
        self._repeats = RepeatFilter(streams)

    def use_state_dir(self, directory, restarted: bool) -> None:
        """Keep the last seq handled per replayable stream in ``<directory>/<name>.seqs`` (the
        runtime calls this, after :meth:`set_replayable_streams`, with a directory that outlives
        the worker). In a ``restarted`` worker, first read what the predecessor handled and
        drop it when the resumed source sends it again; a missing or unreadable file is logged
        and treated as empty (those repeats are then published again)."""
        streams = self._repeats.streams
        if not streams:
            return
        path = Path(directory) / f"{self.name}.seqs"
        seeds: dict[str, int] = {}
        if restarted:
            try:
                seeds = read_seqs(path, streams)
            except FileNotFoundError:
                log.warning("publish %s: %s is missing; repeats of a resumed source may be published again",
                            self.name, path)
            except (OSError, SeqFileError) as e:
                log.warning("publish %s: cannot use %s (%s); repeats of a resumed source may be published again",
                            self.name, path, e)
            for stream, seq in seeds.items():
                self._repeats.seen(stream, seq)
                self._last_seq[stream] = seq   # heartbeats announce it: a lost tail shows as a gap
            self.restored_seqs = dict(seeds)
            log.info("publish %s continues after %s", self.name,
                     ", ".join(f"{s} seq {q}" for s, q in sorted(seeds.items())) or "nothing published")
        if self._sent_seqs is not None:
            self._sent_seqs.close()
        try:
            self._sent_seqs = SentSeqs(path, streams, seeds)
        except (OSError, SeqFileError) as e:   # the node still publishes; only its successor knows less
            log.warning("publish %s: cannot keep %s (%s): after a restart, repeats may be published again",
                        self.name, path, e)

    def _open(self) -> zmq.Socket:
        if self._sock is None:
            p = self.params
            sock = zmq.Context.instance().socket(zmq.XPUB)
            sock.setsockopt(zmq.SNDHWM, p.sndhwm)
            sock.setsockopt(zmq.XPUB_NODROP, 1)      # full subscriber queue -> EAGAIN, not a silent drop
            sock.setsockopt(zmq.XPUB_VERBOSER, 1)    # see every (un)subscription, to count subscribers
            sock.setsockopt(zmq.LINGER, p.linger_ms)
            sock.bind(p.endpoint) if p.bind else sock.connect(p.endpoint)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT) if p.bind else p.endpoint
            self._sock = sock
            if p.heartbeat_ms > 0:
                self._hb_thread = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                                   name=f"{self.name}-heartbeat")
                self._hb_thread.start()
        return self._sock

    # -- subscriptions and heartbeats (under the lock: the socket is shared with process) ----
    def _read_subscriptions(self) -> None:
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg:
                continue
            topic = msg[1:]
            if msg[0] == 1:
                self._subs[topic] = self._subs.get(topic, 0) + 1
                self.subscriptions_seen += 1
            elif msg[0] == 0 and self._subs.get(topic, 0) > 0:
                self._subs[topic] -= 1
                if not self._subs[topic]:
                    del self._subs[topic]

    def _send_heartbeat_locked(self, eos: bool = False) -> list[bytes]:
        """Heartbeat every subscribed topic; returns the topics whose queue was full."""
        self._read_subscriptions()
        data: dict[str, Any] = {"interval_ms": self.params.heartbeat_ms, "streams": dict(self._last_seq)}
        if eos:
            data["eos"] = True
        pkt = Packet("heartbeat", f"{self.name}.heartbeat", self._hb_seq, sent_ns=now_ns(), data=data)
        self._hb_seq += 1
        full = []
        for topic in list(self._subs):
            try:
                self._sock.send_multipart(encode(pkt, topic=topic), flags=zmq.NOBLOCK)
                self.heartbeats += 1
            except zmq.Again:
                full.append(topic)  # that queue is full: data is ahead of the heartbeat anyway
        return full

    def _heartbeat_loop(self) -> None:
        period_s = self.params.heartbeat_ms / 1000.0
        while not self._stop.wait(period_s):
            with self._lock:
                if self._sock is None:
                    return
                self._send_heartbeat_locked()

    def wait_subscribers(self, n: int, timeout_ms: float) -> bool:
        """Wait until ``n`` subscriptions were seen (PUB/SUB's slow-joiner problem); stop-aware."""
        deadline = time.monotonic() + timeout_ms / 1e3
        self._open()
        while True:
            with self._lock:
                self._read_subscriptions()
                if self.subscriptions_seen >= n:
                    return True
            if time.monotonic() >= deadline or self._stop.wait(0.005):
                return False

    # -- the node contract ----------------------------------------------------------------
    def process(self, port: str, packet: Packet) -> dict[str, list[Packet]]:
        if not self._repeats.fresh(packet):
            return {}   # published already (sent again by a resumed source)
        p = self.params
        sock = self._open()
        if p.min_subscribers and self.subscriptions_seen < p.min_subscribers:
            self.wait_subscribers(p.min_subscribers, p.wait_subscribers_ms)
        if p.policy == "realtime" and p.max_age_ms and now_ns() - packet.sent_ns > p.max_age_ms * 1e6:
            self.dropped_late += 1
            with self._lock:
                self._handled(packet)   # heartbeats reveal drops at a stream's tail
            return {}
        frames = encode(packet, topic=p.topic.encode() if p.topic else None)
        backoff_s = 0.0005
        t_wait = None
        while True:
            with self._lock:
                try:
                    sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    self.sent += 1
                    # set only once sent (or dropped): a heartbeat must never announce a seq
                    # that is still waiting here, or a subscriber would count a false gap
                    self._handled(packet)
                    break
                except zmq.Again:
                    if p.policy == "realtime":
                        self.dropped_slow += 1
                        self._handled(packet)
                        break
                self._read_subscriptions()
            # lossless: a subscriber is full; XPUB cannot be polled for room, so back off
            if t_wait is None:
                t_wait = self._waiting_since = time.perf_counter_ns()
            if self._stop.wait(backoff_s):
                with self._lock:
                    self.dropped_slow += 1
                    self._handled(packet)
                break
            backoff_s = min(backoff_s * 2, 0.02)
        if t_wait is not None:
            self._waiting_since = None
            self.wait_ns += time.perf_counter_ns() - t_wait
        return {}

    def _handled(self, packet: Packet) -> None:
        """``packet`` was handed to ZeroMQ, or dropped and counted: it is never sent again,
        by this process (heartbeats announce its seq) nor by a successor (the seq file)."""
        self._last_seq[packet.stream] = packet.seq
        if self._sent_seqs is not None:
            self._sent_seqs.mark(packet.stream, packet.seq)

    def flush(self) -> dict[str, list[Packet]]:
        """End of stream: a heartbeat flagged ``eos`` tells subscribers nothing more is coming.

        It waits (up to ``linger_ms``, stop-aware) for room in full subscriber queues: an
        end-of-stream lost to a slow subscriber would leave it waiting forever.
        """
        if self._sock is None:
            return {}
        deadline = time.monotonic() + self.params.linger_ms / 1e3
        data = {"interval_ms": self.params.heartbeat_ms, "streams": dict(self._last_seq), "eos": True}
        pending = None
        while True:
            with self._lock:
                if pending is None:
                    pending = self._send_heartbeat_locked(eos=True)
                else:
                    pkt = Packet("heartbeat", f"{self.name}.heartbeat", self._hb_seq, sent_ns=now_ns(), data=data)
                    self._hb_seq += 1
                    still = []
                    for topic in pending:
                        try:
                            self._sock.send_multipart(encode(pkt, topic=topic), flags=zmq.NOBLOCK)
                            self.heartbeats += 1
                        except zmq.Again:
                            still.append(topic)
                    pending = still
            if not pending or time.monotonic() > deadline or self._stop.wait(0.002):
                return {}

    def _current_wait_ns(self) -> int:
        since = self._waiting_since
        return 0 if since is None else time.perf_counter_ns() - since

    def stats(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "policy": self.params.policy, "sent": self.sent,
                "dropped": self.dropped_slow + self.dropped_late, "dropped_slow": self.dropped_slow,
                "dropped_late": self.dropped_late, "subscriptions": sum(self._subs.values()),
                "heartbeats": self.heartbeats, "wait_ns": self.wait_ns + self._current_wait_ns(),
                "duplicates_dropped": self._repeats.dropped, "restored_seqs": self.restored_seqs}

    def close(self) -> None:
        self._stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join()
            self._hb_thread = None
        with self._lock:
            if self._sock is not None:
                self._sock.close()   # lingers up to linger_ms for queued messages
                self._sock = None
        if self._sent_seqs is not None:
            self._sent_seqs.close(remove=True)   # a clean end: no successor will resume from it
            self._sent_seqs = None
