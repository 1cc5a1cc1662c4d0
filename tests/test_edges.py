"""Edges over real sockets: lossless backpressure with bounded memory, realtime drops counted."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest
import zmq

from spikeflow.service.edges import EdgeReceiver, EdgeSender
from spikeflow.service.events import SensorSize, make_events
from spikeflow.service.packet import Packet, now_ns
from spikeflow.service.protocol import encode
from waiting import wait_until


def gesture_events(shared, n=None):
    import tonic.io

    raw = tonic.io.read_mnist_file(str(shared("recordings/slayer-dvsgesture/4.bs2")),
                                   dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    n = len(raw) if n is None else n
    return make_events(raw["t"][:n], raw["x"][:n], raw["y"][:n], raw["p"][:n])


def packets_of(events, window_us=10_000, stream="dvs.events_out"):
    """Cut real events into consecutive window packets (views)."""
    t = events["t"]
    out = []
    for seq, t0 in enumerate(range(0, int(t[-1]) + 1, window_us)):
        i0, i1 = np.searchsorted(t, [t0, t0 + window_us])
        out.append(Packet("events", stream, seq, SensorSize(128, 128, 2), t0, t0 + window_us, now_ns(),
                          events[i0:i1]))
    return out


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)   # never hang on a failed test's open sockets


def endpoint(transport, tmp_path, name="edge"):
    return {"inproc": f"inproc://{name}", "ipc": f"ipc://{tmp_path}/{name}.sock",
            "tcp": "tcp://127.0.0.1:*"}[transport]


@pytest.mark.parametrize("transport", ["inproc", "ipc", "tcp"])
def test_lossless_delivers_every_event_bit_exact(shared, tmp_path, ctx, transport):
    events = gesture_events(shared)
    pkts = packets_of(events)
    with EdgeSender(endpoint(transport, tmp_path), policy="lossless", queue=4, context=ctx) as tx, \
            EdgeReceiver(tx.endpoint, context=ctx) as rx:
        got = []

        def consume():
            while len(got) < len(pkts):
                p = rx.recv(5000)
                assert p is not None
                got.append(p)

        th = threading.Thread(target=consume)
        th.start()
        for p in pkts:
            assert tx.send(p, timeout_ms=5000)
        th.join(10)
        assert not th.is_alive()
        assert np.concatenate([p.events for p in got]).tobytes() == events.tobytes()
        assert [p.seq for p in got] == list(range(len(pkts)))
        assert rx.stats()["missing"] == 0 and rx.stats()["rejected_total"] == 0
        assert tx.stats()["dropped"] == 0 and tx.stats()["sent"] == len(pkts)
        assert rx.recv(0) is None                # caught up: the last credits go back
        assert tx.drain(2000) and tx.in_flight == 0


def test_lossless_stalled_receiver_makes_sender_wait_with_bounded_memory(ctx):
    big = make_events(np.arange(100_000), np.zeros(100_000), np.zeros(100_000), np.ones(100_000))
    n_total, window = 60, 4
    proc = psutil.Process()
    tx = EdgeSender("tcp://127.0.0.1:*", policy="lossless", queue=window, context=ctx)
    rx = EdgeReceiver(tx.endpoint, context=ctx)
    try:
        rss0 = proc.memory_info().rss
        progress = []

        def produce():
            for seq in range(n_total):
                assert tx.send(Packet("events", "s", seq, SensorSize(1, 1, 2), seq, seq + 1, now_ns(), big))
                progress.append(seq)

        th = threading.Thread(target=produce)
        th.start()
        # the receiver has not called recv: the sender fills its window, then waits
        deadline = time.monotonic() + 10
        while len(progress) < window and time.monotonic() < deadline:
            th.join(0.01)
        th.join(0.5)
        assert th.is_alive(), "lossless sender must wait for a stalled receiver"
        assert len(progress) == window and tx.in_flight == window
        assert tx.stats()["wait_ns"] > 0.3e9
        grown = proc.memory_info().rss - rss0
        assert grown < (window + 4) * big.nbytes + (30 << 20), f"memory grew by {grown} bytes"
        # the receiver resumes: everything arrives, in order, nothing lost
        seqs = []
        while len(seqs) < n_total:
            p = rx.recv(5000)
            assert p is not None and p.events.tobytes() == big.tobytes()
            seqs.append(p.seq)
        th.join(5)
        assert not th.is_alive()
        assert seqs == list(range(n_total))
        assert tx.stats()["dropped"] == 0 and rx.stats()["missing"] == 0
    finally:
        tx.stop()
        tx.close()
        rx.close()


def test_lossless_wait_ends_on_stop_and_on_timeout(ctx):
    tx = EdgeSender("tcp://127.0.0.1:*", policy="lossless", queue=2, context=ctx)
    rx = EdgeReceiver(tx.endpoint, context=ctx)
    try:
        pkt = Packet("heartbeat", "hb")
        assert tx.send(pkt, 5000) and tx.send(pkt, 5000)
        t0 = time.monotonic()
        assert tx.send(pkt, timeout_ms=100) is False
        assert 0.09 < time.monotonic() - t0 < 2
        result = []
        th = threading.Thread(target=lambda: result.append(tx.send(pkt)))
        th.start()
        th.join(0.2)
        assert th.is_alive()
        tx.stop()
        th.join(2)
        assert result == [False]
    finally:
        tx.close()
        rx.close()


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_realtime_stalled_receiver_drops_counted_sender_never_blocks(shared, tmp_path, ctx, transport):
    events = gesture_events(shared)
    pkts = packets_of(events, window_us=1000)            # 1 ms packets at DVS128 rates
    tx = EdgeSender(endpoint(transport, tmp_path, "rt"), policy="realtime", queue=8, context=ctx)
    rx = EdgeReceiver(tx.endpoint, context=ctx)
    try:
        assert rx.recv(0) is None               # hello: the sender now has credit
        deadline = time.monotonic() + 5
        while tx.in_flight == tx.window and time.monotonic() < deadline:
            tx.socket.poll(10)                   # wait for the hello to arrive
            tx.pump(0)
        worst = 0.0
        for p in pkts:                           # the receiver is stalled meanwhile
            t0 = time.perf_counter()
            assert tx.send(p) is True
            worst = max(worst, time.perf_counter() - t0)
        st = tx.stats()
        # never waited for credit; the wall bound only catches a real block (a loaded box stalls ~0.1 s)
        assert st["wait_ns"] == 0
        assert worst < 1.0, f"a realtime send blocked for {worst * 1e3:.1f} ms"
        assert st["dropped_overflow"] == len(pkts) - tx.window - 8
        assert st["sent"] == tx.window and st["queued"] == 8
        # the receiver wakes up: it gets what was in flight, then the queue, and sees the gap
        got = []
        for _ in range(200):
            tx.pump(100)                          # the receiver's credits let the queue go
            p = rx.recv(100)
            if p is not None:
                got.append(p.seq)
            if tx.stats()["queued"] == 0 and p is None:
                break
        assert len(got) == tx.window + 8
        assert got[:tx.window] == list(range(tx.window))
        assert got[tx.window:] == [p.seq for p in pkts[-8:]]
        rs = rx.stats()
        assert rs["missing"] == st["dropped"] == rs["gaps"]["dvs.events_out"]
    finally:
        tx.close()
        rx.close()


def test_realtime_drops_late_packets(ctx):
    with EdgeSender("inproc://late", policy="realtime", queue=4, max_age_ms=50, context=ctx) as tx, \
            EdgeReceiver("inproc://late", context=ctx) as rx:
        assert rx.recv(0) is None
        old = Packet("heartbeat", "h", 0, sent_ns=now_ns() - 10**9)
        assert tx.send(old) is False and tx.stats()["dropped_late"] == 1
        fresh = Packet("heartbeat", "h", 1, sent_ns=now_ns())
        assert tx.send(fresh) is True
        assert rx.recv(2000).seq == 1


def test_restarted_receiver_gets_credit_and_stream_resumes(ctx):
    tx = EdgeSender("tcp://127.0.0.1:*", policy="lossless", queue=2, context=ctx)
    try:
        rx1 = EdgeReceiver(tx.endpoint, context=ctx)
        for seq in range(2):
            assert tx.send(Packet("heartbeat", "h", seq), 5000)
        assert tx.send(Packet("heartbeat", "h", 99), timeout_ms=100) is False   # window full
        rx1.close()                              # dies with both packets unconsumed
        rx2 = EdgeReceiver(tx.endpoint, context=ctx)
        got = []
        th = threading.Thread(target=lambda: got.extend(rx2.recv(5000).seq for _ in range(6)))
        th.start()
        for seq in range(2, 8):                  # the new receiver's hello resets the window
            assert tx.send(Packet("heartbeat", "h", seq), 5000)
        th.join(5)
        assert got == list(range(2, 8))
        assert rx2.stats()["missing"] == 0       # a fresh receiver starts its gap count at seq 2
        rx2.close()
    finally:
        tx.close()


def test_receiver_binds_sender_connects_and_restarted_sender_gets_credit(ctx):
    rx = EdgeReceiver("tcp://127.0.0.1:*", bind=True, context=ctx)
    try:
        for gen in range(2):                     # a second sender incarnation must not wait forever
            tx = EdgeSender(rx.endpoint, policy="lossless", queue=2, bind=False, context=ctx)
            got = []
            th = threading.Thread(target=lambda: got.extend(rx.recv(5000).seq for _ in range(5)))
            th.start()
            for seq in range(5):
                assert tx.send(Packet("heartbeat", f"h{gen}", seq), timeout_ms=5000)
            th.join(5)
            assert got == list(range(5))
            tx.close()
    finally:
        rx.close()


def test_receiver_rejects_and_counts_garbage(ctx):
    rx = EdgeReceiver("inproc://garbage", bind=True, context=ctx)
    raw = ctx.socket(zmq.DEALER)
    raw.connect("inproc://garbage")
    try:
        raw.send_multipart([b"t", b"\xc1\xc1", b"x"])
        raw.send_multipart([b"t"] + encode(Packet("heartbeat", "h"))[1:] + [b"extra"])
        raw.send(b"lonely")
        raw.send_multipart(encode(Packet("heartbeat", "h", 5)))
        p = rx.recv(5000)
        assert p.seq == 5
        assert rx.stats()["rejected"] == {"msgpack": 1, "extra_frames": 1, "truncated": 1}
    finally:
        raw.close(0)
        rx.close()


def test_bad_arguments():
    with pytest.raises(ValueError, match="policy"):
        EdgeSender("inproc://x", policy="fast")
    from spikeflow.service.errors import ProtocolError
    with pytest.raises(ProtocolError, match="not-an-endpoint"):
        EdgeReceiver("not-an-endpoint")


def test_recv_nowait_for_a_caller_that_polls_the_socket_itself(ctx):
    """The runtime's node thread polls receiver sockets and drains them with recv_nowait: it
    never blocks, and it hands credits back before returning None."""
    tx = EdgeSender("inproc://nowait", policy="lossless", queue=2, context=ctx)
    rx = EdgeReceiver("inproc://nowait", context=ctx)
    try:
        t0 = time.monotonic()
        assert rx.recv_nowait() is None and time.monotonic() - t0 < 0.5
        assert tx.send(Packet("heartbeat", "h", 0), 5000) and tx.send(Packet("heartbeat", "h", 1), 5000)
        assert tx.send(Packet("heartbeat", "h", 2), timeout_ms=100) is False   # window of 2 is full
        poller = zmq.Poller()
        poller.register(rx.socket, zmq.POLLIN)
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            if poller.poll(100):
                while (p := rx.recv_nowait()) is not None:
                    got.append(p.seq)
        assert got == [0, 1]
        assert rx.stats()["received"] == 2
        assert rx.recv_nowait() is None           # caught up: the credits went back upstream
        assert tx.send(Packet("heartbeat", "h", 2), timeout_ms=5000)
        assert tx.send(Packet("heartbeat", "h", 3), timeout_ms=5000)
        assert [rx.recv(5000).seq for _ in range(2)] == [2, 3]
        assert rx.stats()["missing"] == 0
    finally:
        tx.close()
        rx.close()


def test_every_packet_shape_crosses_an_edge_unchanged(ctx):
    """Packets without data take the sender's direct path (array sent as the frame: copied
    below 64 KiB, zero-copy above), packets with data the general one; all arrive intact."""
    big = make_events(np.arange(100_000), np.arange(100_000) % 128, np.arange(100_000) % 7, np.ones(100_000))
    small = make_events([1, 5, 9], [0, 1, 2], [3, 4, 5], [1, 0, 1])
    sent = [
        Packet("events", "a.events_out", 0, SensorSize(128, 128, 2), 0, 10, 1, small),
        Packet("events", "a.events_out", 1, SensorSize(128, 128, 2), 10, 20, 2, small[:0]),
        Packet("events", "a.events_out", 2, SensorSize(128, 128, 2), 20, 30, 3, None),
        Packet("events", "a.events_out", 3, SensorSize(128, 128, 2), 0, 10**6, 4, big),
        Packet("spikes", "a.events_out", 4, SensorSize(32, 32, 8), 0, 10**6, 5, big[::3]),
        Packet("labels", "a.events_out", 5, SensorSize(128, 128, 2), 0, 10, 6,
               data={"class": 3, "scores": np.linspace(0, 1, 11, dtype=np.float32)}),
        Packet("heartbeat", "a.events_out", 6, sent_ns=7),
    ]
    with EdgeSender("tcp://127.0.0.1:*", policy="lossless", queue=4, context=ctx) as tx, \
            EdgeReceiver(tx.endpoint, context=ctx) as rx:
        got = []
        th = threading.Thread(target=lambda: got.extend(rx.recv(5000) for _ in sent))
        th.start()
        for p in sent:
            assert tx.send(p, timeout_ms=5000)
        th.join(10)
        assert len(got) == len(sent) and None not in got
        for a, b in zip(sent, got):
            assert (a.kind, a.stream, a.seq, a.sensor_size, a.t0_us, a.t1_us, a.sent_ns) == \
                   (b.kind, b.stream, b.seq, b.sensor_size, b.t0_us, b.t1_us, b.sent_ns)
            if a.kind in ("events", "spikes"):
                expected = a.events if a.events is not None else big[:0]
                assert b.events.tobytes() == expected.tobytes()
            else:
                assert b.events is None
            assert set(b.data) == set(a.data)
        np.testing.assert_array_equal(got[5].data["scores"], sent[5].data["scores"])
        assert rx.stats()["missing"] == 0 and rx.stats()["rejected_total"] == 0


def test_lossless_window_holds_while_credits_are_read_lazily(ctx):
    """The sender reads credits only every few sends; the window must still never overflow,
    whatever the receiver's pace, and nothing is lost or reordered."""
    window, n = 8, 400
    ev = make_events(np.arange(50), np.zeros(50), np.zeros(50), np.ones(50))
    tx = EdgeSender("tcp://127.0.0.1:*", policy="lossless", queue=window, context=ctx)
    rx = EdgeReceiver(tx.endpoint, context=ctx)
    rng = np.random.default_rng(3)
    pauses = rng.choice([0.0, 0.0, 0.0, 0.002], size=n)
    got = []

    def consume():
        for k in range(n):
            p = rx.recv(5000)
            assert p is not None
            got.append(p.seq)
            if pauses[k]:
                time.sleep(pauses[k])

    th = threading.Thread(target=consume)
    th.start()
    worst = 0
    try:
        for seq in range(n):
            assert tx.send(Packet("events", "s", seq, SensorSize(1, 1, 2), seq, seq + 1, 0, ev), timeout_ms=5000)
            worst = max(worst, tx.in_flight)
        th.join(10)
        assert got == list(range(n))
        assert worst <= window
        assert rx.recv(0) is None                # caught up: the last credits go back
        assert tx.drain(2000) and tx.in_flight == 0
    finally:
        tx.stop()
        th.join(5)
        tx.close()
        rx.close()


def test_receiver_that_knows_the_window_batches_its_credits(ctx):
    """A receiver told the sender's window (as the runtime's are) returns credits every
    min(window / 2, 16) packets while busy and at most every 2 ms when idle, instead of after each
    packet it catches up with: far fewer credit messages, nothing lost or reordered, and a
    sender draining at the end still gets every credit."""
    window, n = 64, 4000
    tx = EdgeSender("tcp://127.0.0.1:*", policy="lossless", queue=window, context=ctx)
    rx = EdgeReceiver(tx.endpoint, context=ctx, window=window)
    assert rx.ack_every == 16
    got, done = [], threading.Event()

    def consume():   # the runtime's pattern: poll, drain with recv_nowait, go idle again
        poller = zmq.Poller()
        poller.register(rx.socket, zmq.POLLIN)
        while not done.is_set():
            if poller.poll(1):
                while (p := rx.recv_nowait()) is not None:
                    got.append(p.seq)
            elif (p := rx.recv_nowait()) is not None:  # idle: lets the receiver flush its credits
                got.append(p.seq)  # (and keeps a packet that arrived just after the poll)

    th = threading.Thread(target=consume)
    th.start()
    try:
        t0 = time.monotonic()
        for seq in range(n):
            assert tx.send(Packet("heartbeat", "h", seq), timeout_ms=5000)
        assert tx.drain(5000) and tx.in_flight == 0
        elapsed_ms = (time.monotonic() - t0) * 1e3
    finally:
        done.set()
        th.join(5)
        tx.close()
        rx.close()
    assert got == list(range(n))
    credits = tx.stats()["credits"]
    assert credits <= n // 16 + elapsed_ms / 2 + 10, (credits, elapsed_ms)
    assert credits < n // 4, credits


def test_realtime_window_of_one_still_flows(ctx):
    """A realtime edge of queue 1 has a window of 1: its receiver must credit every packet."""
    tx = EdgeSender("inproc://rt1", policy="realtime", queue=1, context=ctx)
    rx = EdgeReceiver("inproc://rt1", context=ctx, window=tx.window)
    try:
        assert tx.window == 1 and rx.ack_every == 1
        rx4 = EdgeReceiver("inproc://rt4", context=ctx, window=4)   # the default realtime window
        assert rx4.ack_every == 2
        rx4.close()
        for seq in range(50):
            tx.send(Packet("heartbeat", "h", seq))
            assert tx.pump(2000) == 0
            assert rx.recv(2000).seq == seq
    finally:
        tx.close()
        rx.close()


@pytest.mark.parametrize("transport", ["inproc", "tcp"])
def test_relay_forwards_received_payloads_intact(ctx, tmp_path, transport):
    """A worker that passes a received packet on unchanged sends the received ZeroMQ message
    itself (shared, reference counted) for large payloads; what arrives downstream is intact
    even after the relay dropped every reference to its copy, and nodes' own arrays go as before."""
    import gc

    big = make_events(np.arange(60_000), np.arange(60_000) % 128, np.arange(60_000) % 100, np.arange(60_000) % 2)
    # one thread plays all three roles: 6 packets stay within the credit windows of 8
    with EdgeSender(endpoint(transport, tmp_path, "hop1"), policy="lossless", queue=8, context=ctx) as tx1, \
            EdgeReceiver(tx1.endpoint, context=ctx) as rx1, \
            EdgeSender(endpoint(transport, tmp_path, "hop2"), policy="lossless", queue=8, context=ctx) as tx2, \
            EdgeReceiver(tx2.endpoint, context=ctx) as rx2:
        for seq in range(6):
            assert tx1.send(Packet("events", "cam", seq, SensorSize(128, 128, 2), 0, 60_000, seq, big), 5000)
            q = rx1.recv(5000)
            if seq % 2:                        # a node's own output: a new array, not a received frame
                q = q.with_events(q.events.copy())
            assert tx2.send(q, 5000)
            del q
            gc.collect()
            r = rx2.recv(5000)
            assert r.seq == seq and r.events.tobytes() == big.tobytes()
        assert rx2.stats()["missing"] == 0 and rx2.stats()["rejected_total"] == 0


def test_receiver_drops_what_a_restarted_sender_sends_again(ctx):
    """A restarted sender resumes a replayable stream at an earlier seq: the receiver (which
    outlived it) delivers each seq once and counts the repeats. A stream that is not replayable
    and starts again at 0 (a restarted encoder's new numbering) is delivered in full, and the
    end-of-stream marker (a heartbeat, seq 0) still gets through."""
    from spikeflow.service.repeats import RepeatFilter

    size = SensorSize(4, 4, 2)
    rx = EdgeReceiver("tcp://127.0.0.1:*", bind=True, context=ctx, repeats=RepeatFilter({"src.events_out"}))
    got = []

    def receive(n):
        got.extend(p for p in (rx.recv(5000) for _ in range(n)) if p is not None)

    try:
        for seqs, last in ((range(0, 10), False), (range(6, 14), True)):   # the second resumes at 6
            tx = EdgeSender(rx.endpoint, policy="lossless", queue=4, bind=False, context=ctx)
            fresh = sum(1 for s in seqs if s >= 10 or not last)
            th = threading.Thread(target=receive, args=(fresh + len(seqs) + last,))
            th.start()
            for seq in seqs:
                ev = make_events([seq * 10], [1], [2], [1])
                assert tx.send(Packet("events", "src.events_out", seq, size, seq * 10, seq * 10 + 10, now_ns(), ev), 5000)
                assert tx.send(Packet("spikes", "enc.spikes_out", seq - seqs[0], size), 5000)
            if last:
                assert tx.send(Packet("heartbeat", "src.events_out", 0, data={"eos": True}), 5000)
            th.join(10)
            tx.close()
    finally:
        rx.close()
    src = [p for p in got if p.stream == "src.events_out" and p.kind == "events"]
    assert [p.seq for p in src] == list(range(14))
    assert [int(p.events["t"][0]) for p in src] == [10 * s for s in range(14)]
    assert [p.seq for p in got if p.stream == "enc.spikes_out"] == [*range(10), *range(8)]
    assert got[-1].kind == "heartbeat" and got[-1].data == {"eos": True}
    st = rx.stats()
    assert st["duplicates_dropped"] == 4 and st["missing"] == 0
    assert st["seq_resets"] == 1   # the encoder's new numbering (the end marker's seq 0 is not counted)


# -- batches (docs/protocol.md §7) -----------------------------------------------------------

def _small_packets(n, stream="a.events_out", start=0):
    ev = make_events(np.arange(50), np.arange(50) % 128, np.arange(50) % 9, np.arange(50) % 2)
    return [Packet("events", stream, start + k, SensorSize(128, 128, 2), 1000 * k, 1000 * (k + 1), 7, ev[k % 10:])
            for k in range(n)]


def _collect(rx, n, timeout_s=10):
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        p = rx.recv(200)
        if p is not None:
            got.append(p)
    return got


def test_batching_sender_sends_small_packets_as_batch_messages_in_order(ctx):
    """``batch=8``: twenty small packets go as batches of 8, 8 and (at flush) 4; the receiver
    returns every packet unchanged and in order, credits count packets, nothing is left in
    flight."""
    sent = _small_packets(20)
    with EdgeSender("inproc://batch", policy="lossless", queue=64, batch=8, context=ctx) as tx, \
            EdgeReceiver("inproc://batch", context=ctx) as rx:
        for p in sent:
            assert tx.send(p, timeout_ms=5000)
        assert tx.stats()["unsent"] == 4 and tx.in_flight == 20   # batched packets count as sent
        tx.flush()
        got = _collect(rx, 20)
        assert [(p.seq, p.t0_us, p.events.tobytes()) for p in got] == \
               [(p.seq, p.t0_us, p.events.tobytes()) for p in sent]
        assert (tx.stats()["batches"], tx.stats()["batched"], rx.stats()["batches"]) == (3, 20, 3)
        assert rx.stats()["received"] == 20 and rx.stats()["missing"] == 0 and rx.recv(0) is None
        assert tx.drain(2000) and tx.in_flight == 0


def test_batch_goes_before_a_packet_that_cannot_join_it(ctx):
    """Packets with data, with a payload of 64 KiB or more, without events, or on another
    topic are sent on their own, after the batch in front of them: the order never changes."""
    small = _small_packets(6)
    big = make_events(np.arange(10_000), np.zeros(10_000), np.zeros(10_000), np.ones(10_000))   # 140 KB
    sent = [small[0], small[1],
            Packet("labels", "a.events_out", 2, SensorSize(128, 128, 2), 0, 10, 6, data={"class": 3}),
            small[3], Packet("events", "a.events_out", 4, SensorSize(128, 128, 2), 0, 10, 6, big),
            small[5], _small_packets(1, stream="b.events_out", start=6)[0],
            Packet("heartbeat", "a.events_out", 7, data={"eos": True})]
    with EdgeSender("inproc://order", policy="lossless", queue=64, batch=32, context=ctx) as tx, \
            EdgeReceiver("inproc://order", context=ctx) as rx:
        for p in sent:
            assert tx.send(p, timeout_ms=5000)
        got = _collect(rx, len(sent))   # the heartbeat flushed everything before it
        assert [(p.kind, p.stream, p.seq) for p in got] == [(p.kind, p.stream, p.seq) for p in sent]
        assert got[4].events.tobytes() == big.tobytes()
        assert tx.stats()["batches"] == 1 and tx.stats()["unsent"] == 0   # only [0, 1] went as a batch


def test_batching_sender_flushes_before_it_waits_for_credit(ctx):
    """A window of 4 and batches of up to 32: a full window makes ``send`` flush what it
    batched (the receiver can only credit what it got), so the stream flows, every packet once."""
    sent = _small_packets(100)
    with EdgeSender("inproc://wait", policy="lossless", queue=4, batch=32, context=ctx) as tx, \
            EdgeReceiver("inproc://wait", context=ctx, window=4) as rx:
        got = []
        th = threading.Thread(target=lambda: got.extend(_collect(rx, len(sent))))
        th.start()
        for p in sent:
            assert tx.send(p, timeout_ms=5000)
        tx.flush()
        th.join(15)
        assert [p.seq for p in got] == list(range(100))
        assert tx.stats()["batches"] > 0 and tx.stats()["batched"] <= 100


def test_realtime_edges_and_the_default_never_batch(ctx):
    assert EdgeSender("inproc://rt", policy="realtime", batch=8, context=ctx).batch_max == 1
    assert EdgeSender("inproc://ll", policy="lossless", context=ctx).batch_max == 1
    from spikeflow.service.protocol import MAX_BATCH
    for bad in (0, MAX_BATCH + 1):
        with pytest.raises(ValueError, match="batch"):
            EdgeSender("inproc://bad", batch=bad, context=ctx)


def test_receiver_rejects_a_malformed_batch_whole_and_credits_its_packets(ctx):
    """A batch with a missing frame, a payload of the wrong size or a packet that batches
    cannot carry is rejected whole, counted once by reason, and credited as the number of
    packets its frame count says, so a sender's window does not leak; a good batch after
    them is delivered."""
    from spikeflow.service.protocol import BATCH_HEADER

    rx = EdgeReceiver("inproc://badbatch", bind=True, context=ctx)
    raw = ctx.socket(zmq.DEALER)
    raw.connect("inproc://badbatch")
    p0, p1 = [encode(p) for p in _small_packets(2)]
    labels = encode(Packet("labels", "a.events_out", 9, SensorSize(128, 128, 2), 0, 10, 6, data={"class": 3}))
    with_events = encode(Packet("labels", "a.events_out", 9, SensorSize(128, 128, 2), 0, 10, 6,
                                _small_packets(1)[0].events))
    try:
        raw.send_multipart([p0[0], BATCH_HEADER, p0[1], p0[2]])                          # one pair only
        raw.send_multipart([p0[0], BATCH_HEADER, p0[1], p0[2], p1[1], b"\x00" * 13])      # wrong size
        raw.send_multipart([p0[0], BATCH_HEADER, p0[1], p0[2], labels[1], b"x"])         # a header without payload
        raw.send_multipart([p0[0], BATCH_HEADER, p0[1], p0[2], with_events[1], with_events[2]])   # not events
        raw.send_multipart([p0[0], BATCH_HEADER, p0[1], p0[2], p1[1], p1[2]])            # good
        got = _collect(rx, 2)
        assert [p.seq for p in got] == [0, 1]
        st = rx.stats()
        assert st["rejected"] == {"truncated": 1, "size": 1, "extra_frames": 1, "field": 1} and st["batches"] == 1
        assert "batch packet 1" in rx.rejects.last_error
        assert rx._consumed == 1 + 2 + 2 + 2 + 2
    finally:
        raw.close(0)
        rx.close()


def test_a_batching_sender_sends_its_batch_on_drain_and_close(ctx):
    """``drain`` and ``close`` send what is batched (a library user need not flush first);
    after a stop, ``close`` counts what it could not send as dropped."""
    with EdgeReceiver("inproc://close", bind=True, context=ctx) as rx:
        got, done = [], threading.Event()

        def consume():
            while not done.is_set():
                p = rx.recv(50)
                if p is not None:
                    got.append(p.seq)

        th = threading.Thread(target=consume)
        th.start()
        try:
            tx = EdgeSender("inproc://close", bind=False, batch=8, queue=16, context=ctx)
            for p in _small_packets(3):
                assert tx.send(p, timeout_ms=5000)
            assert tx.stats()["unsent"] == 3
            tx.close()   # lossless: drains for up to 1 s, the batch first
            assert tx.stats()["dropped"] == 0
            wait_until(lambda: got == [0, 1, 2], 10, "the batch sent by close")
            tx2 = EdgeSender("inproc://close", bind=False, batch=8, queue=16, context=ctx)
            assert tx2.send(_small_packets(1, start=3)[0], timeout_ms=5000)
            tx2.stop()
            tx2.close()
            assert tx2.stats()["dropped"] == 1 and tx2.stats()["unsent"] == 0 and got == [0, 1, 2]
        finally:
            done.set()
            th.join(5)


def test_sender_that_finds_credit_keeps_filling_its_batch(ctx):
    """Reading credits is no reason to send a half-full batch: with room in the window, the
    batch fills to its size (3 batches of 20 for 60 packets), rather than going out at every
    credit read (20, 12, 16, 8 and 4 with the previous rule)."""
    sent = _small_packets(60)
    with EdgeSender("inproc://fill", policy="lossless", queue=64, batch=20, context=ctx) as tx, \
            EdgeReceiver("inproc://fill", context=ctx, window=64) as rx:
        for p in sent:
            assert tx.send(p, timeout_ms=5000)
        tx.flush()
        assert (tx.stats()["batches"], tx.stats()["batched"]) == (3, 60)
        got = _collect(rx, 60)
        assert [p.seq for p in got] == list(range(60)) and rx.stats()["batches"] == 3


@pytest.mark.parametrize("max_packets, max_bytes, held", [(256, 50 * 14_000, 50), (256, 1, 32), (20, 10**9, 20)])
def test_lossless_byte_budget_bounds_what_is_in_flight(ctx, max_packets, max_bytes, held):
    """A stalled receiver: the sender stops at its byte budget (50 packets of 14,000 bytes in
    700,000), never below 32 packets (the floor that keeps a receiver's uncredited remainder
    from stalling it), and at its packet window when that comes first. Then everything flows,
    in order."""
    ev = make_events(np.arange(1000), np.arange(1000) % 128, np.arange(1000) % 128, np.arange(1000) % 2)
    assert ev.nbytes == 14_000
    n = 120
    tx = EdgeSender("tcp://127.0.0.1:*", policy="lossless", queue=max_packets, max_bytes=max_bytes, context=ctx)
    rx = EdgeReceiver(tx.endpoint, context=ctx, window=max_packets)
    progress = []

    def produce():
        for seq in range(n):
            assert tx.send(Packet("events", "s", seq, SensorSize(128, 128, 2), seq, seq + 1, 0, ev), timeout_ms=10_000)
            progress.append(seq)

    th = threading.Thread(target=produce)
    try:
        th.start()
        wait_until(lambda: len(progress) >= held and tx.stats()["waiting"], timeout_s=10,
                   what=f"the sender waiting for credit after {held} packets")
        th.join(0.2)   # and staying there
        assert len(progress) == held and tx.in_flight == held
        assert tx.stats()["in_flight_bytes"] == held * ev.nbytes
        assert tx.stats()["max_bytes"] == max_bytes
        got = _collect(rx, n)
        th.join(10)
        assert [p.seq for p in got] == list(range(n)) and not th.is_alive()
        assert rx.recv(0) is None and tx.drain(2000)
        assert tx.in_flight == 0 and tx.stats()["in_flight_bytes"] == 0
    finally:
        tx.stop()
        th.join(5)
        tx.close()
        rx.close()


def test_byte_budget_forgets_what_a_dead_receiver_held(ctx):
    """A restarted receiver (new id) resets the window: the bytes sent to its predecessor no
    longer count against the budget."""
    ev = make_events(np.arange(1000), np.zeros(1000), np.zeros(1000), np.ones(1000))
    tx = EdgeSender("tcp://127.0.0.1:*", policy="lossless", queue=256, max_bytes=40 * ev.nbytes, context=ctx)
    try:
        rx = EdgeReceiver(tx.endpoint, context=ctx, window=256)
        for seq in range(40):
            assert tx.send(Packet("events", "s", seq, SensorSize(1, 1, 2), seq, seq + 1, 0, ev), timeout_ms=5000)
        assert not tx.send(Packet("events", "s", 40, SensorSize(1, 1, 2), 40, 41, 0, ev), timeout_ms=200)
        rx.close()
        rx = EdgeReceiver(tx.endpoint, context=ctx, window=256)
        assert tx.send(Packet("events", "s", 40, SensorSize(1, 1, 2), 40, 41, 0, ev), timeout_ms=5000)
        assert tx.stats()["in_flight_bytes"] == ev.nbytes and tx.in_flight == 1
        got = _collect(rx, 1)
        assert [p.seq for p in got] == [40]
        rx.close()
    finally:
        tx.stop()
        tx.close()


def test_receiver_restart_while_a_batch_waits_gets_that_batch(ctx):
    """A receiver restarts while the sender holds a part-filled batch: those packets have gone
    nowhere, so they count as in flight to the new receiver, which gets them; the window and
    the byte budget balance to zero once it has consumed everything."""
    sent = _small_packets(6)
    tx = EdgeSender("tcp://127.0.0.1:*", policy="lossless", queue=8, batch=32, max_bytes=10**9, context=ctx)
    rx2 = None
    try:
        rx1 = EdgeReceiver(tx.endpoint, context=ctx, window=8)
        for p in sent[:4]:
            assert tx.send(p, timeout_ms=5000)   # batched: none sent yet
        assert tx.stats()["unsent"] == 4
        rx1.close()
        rx2 = EdgeReceiver(tx.endpoint, context=ctx, window=8)
        wait_until(lambda: tx.socket.poll(0), timeout_s=10, what="the new receiver's hello")
        for p in sent[4:]:
            assert tx.send(p, timeout_ms=5000)   # the first reads the hello with the batch waiting
        tx.flush()
        got = _collect(rx2, 6)
        assert [p.seq for p in got] == list(range(6))
        assert rx2.recv(0) is None and tx.drain(2000)
        assert tx.in_flight == 0 and tx.stats()["in_flight_bytes"] == 0
    finally:
        tx.stop()
        tx.close()
        if rx2 is not None:
            rx2.close()
