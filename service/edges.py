"""Graph edges between workers (and processes): ZeroMQ sockets with an explicit drop policy.

The sender is a ROUTER and the receiver a DEALER, so one connection carries data downstream
and credits upstream (the zguide's credit-based flow control). The receiver returns a credit
for every message it has consumed; the sender keeps at most ``window`` messages
unacknowledged and addresses them to the receiver that sent the latest credit (ROUTER
routing), so a restarted receiver never has packets sent into its dead predecessor's pipe.
An edge is point to point: a newly connected receiver replaces the previous one. A lossless
sender built with ``batch`` > 1 sends the small packets it is given between two ``flush``
calls as one batch message (docs/protocol.md §7); credits count packets either way.

* ``lossless``: when the window is full, :meth:`EdgeSender.send` waits (backpressure) until the
  receiver catches up or :meth:`EdgeSender.stop` is called. Memory is bounded by the window
  and, given ``max_bytes``, by the payload bytes in flight (beyond :data:`BYTES_FLOOR`
  packets): many small packets may be in flight, few large ones.
* ``realtime``: ``send`` never blocks. Packets that cannot go now wait in *our* bounded queue;
  when it is full the oldest is dropped, and packets older than ``max_age_ms`` are dropped when
  dequeued. Every drop is counted, and the receiver sees it as a gap in ``seq``.

Why our own queue rather than ZeroMQ options: the high-water mark (HWM) bounds memory, not
latency (messages sit in kernel and peer buffers too, and their age is unknown), and
``ZMQ_CONFLATE`` keeps only the last *frame*, which breaks multipart messages. So drop policies
are our code, counted, and the socket's HWM is set above the window so ZeroMQ itself never
drops or blocks.

The credit message is one frame (data messages always have >= 2 frames)::

    receiver -> sender   b"K" | receiver id u32 LE | messages consumed so far u64 LE   (13 bytes)

Counts are cumulative, so duplicates are harmless: an idle receiver repeats its K every
200 ms, which is also how a restarted sender learns about it. A new receiver id (a restarted
receiver) resets the window. Endpoints: ``inproc://name`` (same context), ``ipc:///path``,
``tcp://127.0.0.1:port`` (``:*`` picks a free port; see :attr:`endpoint`). Nothing binds beyond
loopback unless the endpoint says so.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import deque
from typing import Any

import zmq

from .errors import ProtocolError
from .packet import Packet, is_eos, now_ns
from .protocol import (BATCH_HEADER, COPY_THRESHOLD, MAX_BATCH, ProtocolRejected, RejectCounter, SeqTracker, batch_size,
                       decode, decode_batch, encode, encode_plain, has_input, is_batch, receiving_socket_options,
                       recv_frames, send_frames)

POLICIES = ("lossless", "realtime")


def default_window(policy: str, queue: int) -> int:
    """The credit window of an edge: its queue when lossless; at most 4 when realtime, so stale
    packets do not pile up in flight."""
    return int(queue if policy == "lossless" else min(4, queue))


BYTES_FLOOR = 32
"""A lossless sender's byte budget (``max_bytes``) never holds it below this many packets in
flight: twice the most a receiver leaves uncredited (16, docs/protocol.md §7), so an idle
receiver's uncredited remainder can never stall it."""

_CREDIT = struct.Struct("<cIQ")
BATCH_MAX = 32
"""Packets per message of the runtime's lossless edges (``EdgeSender(batch=BATCH_MAX)``;
docs/protocol.md §7, edge batches)."""
BATCH_MAX_AGE_NS = 1_000_000
""":meth:`EdgeSender.flush_due` sends a batch whose first packet waited longer than this."""
_SLICE_MS = 50
_KEEPALIVE_S = 0.2
_IDLE_ACK_S = 0.002
"""Longest uninterrupted wait: stop flags are checked at least this often."""
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.NOBLOCK | zmq.SNDMORE)
_EAGAIN = zmq.EAGAIN
_zsend = zmq.backend.Socket.send   # pyzmq's compiled methods, without its Python layer (see protocol)
_zrecv = zmq.backend.Socket.recv
_Again = zmq.Again
_Frame = zmq.Frame
_EHOSTUNREACH = zmq.EHOSTUNREACH


def payload_bytes(packet: Packet) -> int:
    """Bytes of a packet's arrays (its events and any arrays in ``data``): what a byte budget counts."""
    n = 0 if packet.events is None else packet.events.nbytes
    if packet.data:
        n += sum(v.nbytes for v in packet.data.values() if hasattr(v, "nbytes"))
    return n


def _open(context: zmq.Context | None, kind: int, endpoint: str, bind: bool, hwm: int) -> zmq.Socket:
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(kind)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)   # a vanished receiver raises, never a silent drop
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(endpoint) if bind else sock.connect(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise ProtocolError(f"endpoint {endpoint!r}: cannot {'bind' if bind else 'connect'} ({e})") from None
    return sock


class EdgeSender:
    """Upstream end of an edge: ``send(packet)`` under the ``lossless`` or ``realtime`` policy.

    >>> tx = EdgeSender("tcp://127.0.0.1:*", policy="realtime", queue=8)   # doctest: +SKIP
    >>> rx = EdgeReceiver(tx.endpoint)
    >>> tx.send(packet); rx.recv(1000)

    ``queue`` bounds what the edge holds: the credit window for ``lossless``; our drop-oldest
    queue for ``realtime`` (whose window defaults to 4 so stale packets do not pile up
    downstream). One thread uses a sender; :meth:`stop` may be called from any thread.

    ``batch`` > 1 (lossless only): ``send`` collects up to that many small events packets and
    sends them as one batch message (docs/protocol.md §7), which costs the two ends less per
    packet than a message each. The caller must :meth:`flush` before it waits for anything
    else, or the batched packets wait with it (the runtime flushes before its node thread
    polls; ``send`` flushes a full batch, before a packet that cannot join one, and before it
    waits for credit).
    """

    def __init__(self, endpoint: str, *, policy: str = "lossless", queue: int = 32, bind: bool = True,
                 context: zmq.Context | None = None, window: int | None = None,
                 max_age_ms: float | None = None, topic: bytes | None = None,
                 stop_event: threading.Event | None = None, batch: int = 1, max_bytes: int | None = None):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if queue < 1:
            raise ValueError(f"queue must be >= 1, got {queue}")
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be in [1, {MAX_BATCH}], got {batch}")
        self.policy = policy
        self.queue_limit = int(queue)
        self.window = int(window or default_window(policy, queue))
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        # payload bytes of each packet in flight, oldest first (lossless with a byte budget only)
        self.max_bytes = int(max_bytes) if max_bytes is not None and policy == "lossless" else None
        self._sizes: deque[int] = deque()
        self._bytes = 0               # their sum
        self.max_age_ns = None if max_age_ms is None else int(max_age_ms * 1e6)
        self.topic = topic
        self._stop = stop_event or threading.Event()
        self._sock = _open(context, zmq.ROUTER, endpoint, bind, hwm=self.window + 64)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) if bind else endpoint
        self._queue: deque[Packet] = deque()
        self._sent = 0                # messages handed to ZeroMQ (cumulative)
        self._base = 0                # credits of the current receiver are counted from here
        self._rid: int | None = None  # current receiver incarnation
        self._peer = b""              # its ROUTER routing id
        self.dropped_overflow = 0
        self.dropped_late = 0
        self.bad_control = 0
        self.credits = 0   # credit messages read (each acknowledges one or more packets)
        self.wait_ns = 0              # time spent waiting for credit (lossless backpressure)
        self._acked = 0
        self._free_until = 0          # sends below this count need no look at credits
        self._waiting_since: int | None = None
        self.batch_max = int(batch) if policy == "lossless" else 1
        self._batch: list[tuple[bytes, bytes, Any]] = []   # (topic, header, events) not yet sent
        self._batch_t0 = 0            # when its first packet was batched (time.perf_counter_ns)
        self.batches = 0              # batch messages sent (each carries 2..BATCH_MAX packets)
        self.batched = 0              # packets sent in them

    # -- credit bookkeeping -----------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Messages sent and not yet consumed by the receiver (the window is full at ``window``)."""
        return self.window if self._rid is None else self._sent - self._base - self._acked

    def _plan(self) -> None:
        """After reading credits: how many more messages may go before looking again.

        Looking costs a system call inside ZeroMQ (its command mailbox), so the sender does not
        look on every send: with ``f`` messages in flight it sends half the remaining window,
        ``ceil((window - f) / 2)``, before it reads credits again (16, 8, 4, 2, 1 with a window of
        32 and a receiver that does not answer), and waits only when the window is full."""
        if self._rid is None:
            self._free_until = self._sent
            return
        f = self._sent - self._base - self._acked
        self._free_until = self._sent + (self.window - f + 1) // 2 if f < self.window else self._sent

    def _drain_control(self) -> None:
        sock = self._sock
        while has_input(sock):   # (cheaper than reading until zmq.Again is raised)
            try:
                parts = recv_frames(sock, _NOBLOCK)
            except zmq.Again:
                break
            if len(parts) != 2 or len(parts[1]) != _CREDIT.size or parts[1].bytes[:1] != b"K":
                self.bad_control += 1
                continue
            _, rid, consumed = _CREDIT.unpack(parts[1].bytes)
            if rid != self._rid:      # a new receiver: whatever went to an older one is gone
                self._rid = rid       # (what is batched has gone nowhere yet: it goes to this one)
                self._base = self._sent - len(self._batch) - consumed
            self._peer = parts[0].bytes   # (a reconnect of the same receiver changes only this)
            self._acked = consumed
            self.credits += 1
        if self.max_bytes is not None and self._rid is not None:
            sizes, keep = self._sizes, self._sent - self._base - self._acked
            while len(sizes) > keep and sizes:   # consumed: no longer in flight (a receiver
                # crediting more than it was sent must not break the sender)
                self._bytes -= sizes.popleft()
        self._plan()

    def _room(self) -> bool:
        """The window (and the byte budget, above BYTES_FLOOR packets) has room for one more."""
        f = self.in_flight
        return f < self.window and (self.max_bytes is None or f < BYTES_FLOOR or self._bytes < self.max_bytes)

    def _wait_credit(self, deadline: float | None) -> bool:
        """Wait until the window has room; False on stop or timeout."""
        if self._sent < self._free_until and (self.max_bytes is None or self._bytes < self.max_bytes):
            return True  # fast path: room for this one without reading credits
        self._drain_control()
        if self._room():
            return True  # credit had come: no wait, and what is batched may keep filling
        self.flush()   # the receiver can only credit what it has been sent
        t_start = self._waiting_since = time.perf_counter_ns()
        try:
            while True:
                self._drain_control()
                if self._room():
                    return True
                if self._stop.is_set():
                    return False
                slice_ms = _SLICE_MS
                if deadline is not None:
                    left_ms = (deadline - time.monotonic()) * 1e3
                    if left_ms <= 0:
                        return False
                    slice_ms = max(1, min(slice_ms, int(left_ms)))
                self._sock.poll(slice_ms, zmq.POLLIN)
        finally:
            self._waiting_since = None
            self.wait_ns += time.perf_counter_ns() - t_start

    def _route(self, deadline: float | None) -> bool:
        """Queue the routing frame of the next message (the current receiver's id): an unknown
        or full receiver raises here, before any other frame of the message is queued. Waits
        for a receiver, or for room, as ``send`` does; False on stop or timeout."""
        sock = self._sock
        while True:
            try:
                _zsend(sock, self._peer, _MORE_NOBLOCK, True)
                return True
            except zmq.ZMQError as e:
                if e.errno != _EAGAIN and e.errno != _EHOSTUNREACH:
                    raise
                if e.errno == _EHOSTUNREACH:  # the receiver is gone: wait for the next one
                    self._rid = None
                    self._plan()
                else:                            # its pipe is full (credits overshot after a reset)
                    self._stop.wait(0.001)
                if self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                    return False
                if not self._wait_credit(deadline):
                    return False

    def _send_events(self, events: Any, flags: int) -> None:
        """The payload frame: copied below COPY_THRESHOLD, else read by ZeroMQ in place."""
        sock = self._sock
        nbytes = events.nbytes
        if nbytes < COPY_THRESHOLD:
            _zsend(sock, events, flags, True)
            return
        base = events.base
        if type(base) is _Frame and len(base) == nbytes:
            # the whole of a received frame, forwarded unchanged (a relay, a pass-through node):
            # share ZeroMQ's message (a reference count) instead of wrapping the array in a new
            # zero-copy frame, whose release goes through pyzmq's garbage-collector thread
            _zsend(sock, base, flags, False)
        else:
            _zsend(sock, events, flags, False)

    def _send_now(self, packet: Packet, deadline: float | None) -> bool:
        if packet.data:
            frames = encode(packet, self.topic)
        else:   # the common case: no list, no memoryview, the array itself is the payload frame
            topic, header, events = encode_plain(packet, self.topic)
            frames = None
        if not self._route(deadline):
            return False
        if frames is not None:
            send_frames(self._sock, frames, _NOBLOCK)
        else:
            self._send_plain(topic, header, events)
        self._sent += 1
        if self.max_bytes is not None:
            self._in_flight_bytes(payload_bytes(packet))
        return True

    def _in_flight_bytes(self, n: int) -> None:
        """One more packet of ``n`` payload bytes in flight (``_drain_control`` retires them)."""
        self._sizes.append(n)
        self._bytes += n

    def _send_plain(self, topic: bytes, header: bytes, events: Any) -> None:
        """The frames after the routing frame of one packet without data (``encode_plain``)."""
        sock = self._sock
        _zsend(sock, topic, _MORE_NOBLOCK, True)
        if events is None:
            _zsend(sock, header, _NOBLOCK, True)
        else:
            _zsend(sock, header, _MORE_NOBLOCK, True)
            self._send_events(events, _NOBLOCK)

    def flush(self) -> None:
        """Send the packets a lossless ``send`` has batched: one message
        ``[topic, BATCH_HEADER, (header, events) x n]`` (a single packet goes as itself). The
        runtime calls it before its node thread waits; ``send`` calls it when the batch is
        full, before a packet that cannot join it, and before waiting for credit. Packets it
        cannot send (stopped) are dropped and counted in ``dropped_overflow``."""
        batch = self._batch
        if not batch:
            return
        self._batch = []
        if not self._route(None):
            self.dropped_overflow += len(batch)
            return
        if len(batch) == 1:
            self._send_plain(*batch[0])
            return
        sock = self._sock
        _zsend(sock, batch[0][0], _MORE_NOBLOCK, True)
        _zsend(sock, BATCH_HEADER, _MORE_NOBLOCK, True)
        last = len(batch) - 1
        for i, (_, header, events) in enumerate(batch):
            _zsend(sock, header, _MORE_NOBLOCK, True)
            _zsend(sock, events, _NOBLOCK if i == last else _MORE_NOBLOCK, True)
        self.batches += 1
        self.batched += len(batch)

    # -- public API -------------------------------------------------------------------------
    def send(self, packet: Packet, timeout_ms: float | None = None) -> bool:
        """Send one packet. Returns False if it was not accepted.

        ``lossless``: waits for credit (backpressure); False only on :meth:`stop` or timeout.
        ``realtime``: never waits; False when the packet itself is already older than
        ``max_age_ms``. Accepting a packet into a full queue drops (and counts) the oldest.
        """
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1e3
        if self.policy == "lossless":
            if not self._wait_credit(deadline):
                return False
            ev = packet.events
            if self.batch_max == 1 or packet.data or ev is None or not 0 < ev.nbytes < COPY_THRESHOLD:
                self.flush()   # (order: what was batched goes first)
                return self._send_now(packet, deadline)
            frames = encode_plain(packet, self.topic)
            batch = self._batch
            if batch and batch[0][0] != frames[0]:
                self.flush()   # one topic per message
                batch = self._batch
            if not batch:
                self._batch_t0 = time.perf_counter_ns()
            batch.append(frames)
            self._sent += 1
            if self.max_bytes is not None:
                self._in_flight_bytes(ev.nbytes)
            if len(batch) >= self.batch_max:
                self.flush()
            return True
        if self._queue or self._sent >= self._free_until:
            self.pump()   # reads credits, sends what they allow
        if self._is_late(packet):
            self.dropped_late += 1
            return False
        if not self._queue and self.in_flight < self.window and self._send_now(packet, time.monotonic()):
            return True
        self._queue.append(packet)
        if len(self._queue) > self.queue_limit:
            self._queue.popleft()
            self.dropped_overflow += 1
        return True

    def flush_due(self, now_ns: int, force: bool = False) -> None:
        """:meth:`flush` if anything is batched and ``force`` (e.g. the node that emitted it was
        slow, so the next packet would keep it waiting as long) or its first packet has waited
        ``BATCH_MAX_AGE_NS`` (``now_ns`` from ``time.perf_counter_ns``)."""
        if self._batch and (force or now_ns - self._batch_t0 > BATCH_MAX_AGE_NS):
            self.flush()

    def _is_late(self, packet: Packet) -> bool:
        return self.max_age_ns is not None and now_ns() - packet.sent_ns > self.max_age_ns

    def pump(self, timeout_ms: float = 0) -> int:
        """Realtime: send queued packets as credit allows, waiting up to ``timeout_ms``; returns
        how many are still queued. Call it when idle so queued packets do not wait for the next
        ``send``."""
        deadline = time.monotonic() + timeout_ms / 1e3
        self._drain_control()
        while self._queue:
            if self._sent >= self._free_until:
                self._drain_control()
                if self.in_flight >= self.window and (timeout_ms <= 0 or not self._wait_credit(deadline)):
                    break
            packet = self._queue.popleft()
            if self._is_late(packet):
                self.dropped_late += 1
                continue
            if not self._send_now(packet, deadline):
                self._queue.appendleft(packet)
                break
        return len(self._queue)

    def drain(self, timeout_ms: float = 1000) -> bool:
        """Wait until the receiver has consumed everything sent (batched, queued); True if it did."""
        deadline = time.monotonic() + timeout_ms / 1e3
        self.flush()
        self.pump(timeout_ms)
        while self.in_flight > 0 or self._queue:
            self._drain_control()
            if self.in_flight == 0 and not self._queue:
                break
            if self._stop.is_set() or time.monotonic() > deadline:
                return False
            self.pump(0)
            self._sock.poll(min(_SLICE_MS, max(1, int((deadline - time.monotonic()) * 1e3))), zmq.POLLIN)
        return True

    @property
    def socket(self) -> zmq.Socket:
        """The underlying socket: POLLIN on it means credit arrived (call :meth:`pump`)."""
        return self._sock

    def stop(self) -> None:
        """Wake a waiting ``send`` (it returns False); thread-safe."""
        self._stop.set()

    def stats(self) -> dict[str, Any]:
        """Counters (plain reads: safe from a metrics thread; credits are read by send/pump)."""
        since = self._waiting_since
        return {"policy": self.policy, "sent": self._sent, "dropped": self.dropped_overflow + self.dropped_late,
                "dropped_overflow": self.dropped_overflow, "dropped_late": self.dropped_late,
                "queued": len(self._queue), "in_flight": self.in_flight, "window": self.window,
                "in_flight_bytes": self._bytes, "max_bytes": self.max_bytes,
                "waiting": since is not None,
                "wait_ns": self.wait_ns + (0 if since is None else time.perf_counter_ns() - since),
                "bad_control": self.bad_control, "credits": self.credits, "batches": self.batches,
                "batched": self.batched, "unsent": len(self._batch)}

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket. For up to ``linger_ms`` (default: 1000 lossless, 0 realtime) batched
        and queued packets still go and the receiver may consume what is in flight; packets
        left in our batch or realtime queue count as dropped."""
        if self._sock.closed:
            return
        if linger_ms is None:
            linger_ms = 1000 if self.policy == "lossless" else 0
        if linger_ms > 0 and not self._stop.is_set():
            self.drain(linger_ms)
        self.dropped_overflow += len(self._queue) + len(self._batch)
        self._queue.clear()
        self._batch = []
        self._sock.close(linger=int(linger_ms))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EdgeReceiver:
    """Downstream end of an edge: ``recv(timeout_ms) -> Packet | None``, or ``recv_nowait()``
    for a loop that polls :attr:`socket` itself.

    Malformed messages are rejected and counted by reason (never raised); ``seq`` gaps per
    stream are counted (``stats()['gaps']``). Credits go back upstream as packets are consumed,
    so a receiver that stops calling ``recv`` makes a lossless sender wait. With ``repeats``
    (a :class:`~spikeflow.service.repeats.RepeatFilter`), packets a restarted sender sends again
    are consumed and dropped (``stats()['duplicates_dropped']``): the receiver outlives the
    sender, so delivery on its replayable streams is exactly-once across the sender's restarts.
    """

    def __init__(self, endpoint: str, *, bind: bool = False, context: zmq.Context | None = None,
                 ack_every: int = 8, hwm: int = 4096, repeats=None, window: int | None = None):
        self._sock = _open(context, zmq.DEALER, endpoint, bind, hwm=hwm)
        receiving_socket_options(self._sock)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) if bind else endpoint
        self.rid = struct.unpack("<I", os.urandom(4))[0]
        # Knowing the sender's window, credits go back every min(window/2, 16) messages while
        # busy and, when idle, at most every 2 ms: the sender then always holds more than half
        # its window, and one credit message replaces up to 16 (without it, a consumer faster
        # than its producer goes idle after nearly every packet and answers each one with a
        # credit: ~40 % of a receiving worker's CPU and a sixth of the sender's, measured with
        # py-spy). Small (realtime) windows get a credit every other message, a window of 1
        # every message.
        self._lazy_idle = window is not None
        self.ack_every = max(1, min(int(window) // 2, 16)) if window is not None else max(1, int(ack_every))
        self.rejects = RejectCounter()
        self.seqs = SeqTracker()
        self.repeats = repeats
        self.received = 0
        self._consumed = 0
        self._acked = -1
        self._last_ack = 0.0
        self._pending: deque[Packet] = deque()   # the rest of a batch being delivered
        self.batches = 0
        self._ack()

    @property
    def socket(self) -> zmq.Socket:
        """The underlying socket, for a ``zmq.Poller`` over several inputs (poll POLLIN)."""
        return self._sock

    def _ack(self) -> None:
        """Tell the sender how many messages were consumed (also the hello of a new receiver)."""
        now = time.monotonic()
        if self._acked == self._consumed and now - self._last_ack < _KEEPALIVE_S:
            return
        try:
            _zsend(self._sock, _CREDIT.pack(b"K", self.rid, self._consumed), _NOBLOCK, True)
            self._acked = self._consumed
            self._last_ack = now
        except zmq.Again:
            pass  # no sender connected yet; retried while waiting

    @property
    def pending(self) -> int:
        """Packets of a received batch not yet returned (deliver them before waiting on the
        socket: they are already out of it)."""
        return len(self._pending)

    def _next(self) -> Packet | None:
        """The next packet: the rest of a batch, else the next message if one is waiting (else
        raise zmq.Again); None if it was rejected or a repeat (and counted)."""
        if self._pending:
            packet = self._pending.popleft()
        else:
            sock = self._sock
            frame = _zrecv(sock, _NOBLOCK, False)
            frames = [frame]
            while frame.more:
                frame = _zrecv(sock, 0, False)
                frames.append(frame)
            batch = len(frames) > 3 and is_batch(frames)
            # credits count packets: a batch of n is n, also when it is rejected
            self._consumed += batch_size(frames) if batch else 1
            if self._consumed - self._acked >= self.ack_every:
                self._ack()  # batched while busy; the rest before the next wait or on close
            try:
                if batch:
                    packets = decode_batch(frames)
                    self.batches += 1
                    packet = packets[0]
                    self._pending.extend(packets[1:])
                else:
                    _, packet = decode(frames)
            except ProtocolRejected as e:
                self.rejects.count(e.reason, str(e))
                return None
        if is_eos(packet):
            return packet  # the end-of-stream marker (seq 0) is not a packet of the stream it names
        if self.repeats is not None and not self.repeats.fresh(packet):
            return None   # sent again by a restarted sender: consumed (credited), counted, dropped
        self.received += 1
        self.seqs.update(packet.stream, packet.seq)
        return packet

    def recv_nowait(self) -> Packet | None:
        """Next valid packet if one is already queued, else None; never polls or blocks.

        For a loop that polls :attr:`socket` itself (with other sockets): on POLLIN call this
        until it returns None. Returning None first hands every credit back (the caller is about
        to wait), and an idle receiver repeats its credit at most every 200 ms when this is
        called, so call it (or :meth:`recv`) at least that often while idle: a restarted sender
        learns about its receiver from it.
        """
        try:
            while True:
                packet = self._next()
                if packet is not None:
                    return packet
        except _Again:
            if not self._lazy_idle or time.monotonic() - self._last_ack >= _IDLE_ACK_S:
                self._ack()
            return None

    def recv(self, timeout_ms: float | None = None) -> Packet | None:
        """Next valid packet, or None when ``timeout_ms`` passes (None = wait forever)."""
        deadline = None
        while True:
            try:
                packet = self._next()
            except _Again:
                pass
            else:
                if packet is not None:
                    return packet
                continue
            # nothing queued: return every credit first (no deadlock), then wait
            if deadline is None and timeout_ms is not None:
                deadline = time.monotonic() + timeout_ms / 1e3
            self._ack()
            while True:
                slice_ms = _SLICE_MS  # idle: repeat our K (a restarted sender needs it)
                if deadline is not None:
                    slice_ms = min(slice_ms, max(0, int((deadline - time.monotonic()) * 1e3)))
                if self._sock.poll(slice_ms, zmq.POLLIN):
                    break
                self._ack()
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    def stats(self) -> dict[str, Any]:
        return {"received": self.received, "rejected": self.rejects.as_dict(),
                "rejected_total": self.rejects.total, "gaps": self.seqs.snapshot(),
                "missing": self.seqs.missing, "seq_resets": self.seqs.resets,
                "duplicates_dropped": 0 if self.repeats is None else self.repeats.dropped,
                "batches": self.batches,
                "queue_depth": None}  # ZeroMQ does not expose its queue length

    def close(self) -> None:
        """Return the last credits (so a draining sender need not time out), then close."""
        if not self._sock.closed:
            self._ack()
            self._sock.close(linger=100)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
