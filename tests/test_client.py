"""Client library against the real nodes over tcp: Subscriber <- publish, Pusher -> zmq_input."""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from spikeflow.nodes.base import build_params
from spikeflow.service import registry
from spikeflow.service.client import LagError, Pusher, Subscriber
from spikeflow.service.errors import ParamError
from spikeflow.service.events import SensorSize, make_events
from spikeflow.service.packet import Packet, now_ns
from spikeflow.service.protocol import encode
from spikeflow.service.zmq_nodes import Publish, PublishParams, ZmqInput, ZmqInputParams
from waiting import wait_until

DVS128 = SensorSize(128, 128, 2)


def gesture_events(shared, clip=2):
    import tonic.io

    raw = tonic.io.read_mnist_file(str(shared(f"recordings/slayer-dvsgesture/{clip}.bs2")),
                                   dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    return make_events(raw["t"], raw["x"], raw["y"], raw["p"])


def windows(events, window_us):
    t = events["t"]
    for t0 in range(0, int(t[-1]) + 1, window_us):
        i0, i1 = np.searchsorted(t, [t0, t0 + window_us])
        yield t0, t0 + window_us, events[i0:i1]


def publish_node(**kw) -> Publish:
    node = Publish("pub", PublishParams(endpoint="tcp://127.0.0.1:*", **kw))
    node.setup({})
    return node


# -- Subscriber <- publish ----------------------------------------------------------------------

def test_subscriber_gets_every_event_lossless_and_ends_at_eos(shared):
    events = gesture_events(shared)
    pub = publish_node(policy="lossless", sndhwm=4, heartbeat_ms=200)
    try:
        with Subscriber(pub.endpoint, topics=[b"filter"]) as sub:
            assert pub.wait_subscribers(1, 5000)
            got = []
            th = threading.Thread(target=lambda: got.extend(sub))
            th.start()
            for seq, (t0, t1, ev) in enumerate(windows(events, 10_000)):
                pub.process("events_in", Packet("events", "filter.events_out", seq, DVS128, t0, t1, now_ns(), ev))
            pub.process("events_in", Packet("labels", "filter.labels_out", 0, DVS128, 0, 1_450_000, now_ns(),
                                            data={"class": 2, "scores": np.array([0.1, 0.9], np.float32)}))
            pub.flush()
            th.join(10)
            assert not th.is_alive() and sub.ended
            ev_pkts = [p for p in got if p.kind == "events"]
            assert np.concatenate([p.events for p in ev_pkts]).tobytes() == events.tobytes()
            assert [p.seq for p in ev_pkts] == list(range(len(ev_pkts)))
            assert got[-1].data["class"] == 2 and got[-1].data["scores"].tolist() == pytest.approx([0.1, 0.9])
            assert sub.gaps == {} and sub.rejects.total == 0 and sub.lag_ns is not None
            assert pub.stats()["dropped"] == 0 and pub.stats()["sent"] == len(got)
    finally:
        pub.close()


def test_topic_filter_excludes_other_streams(shared):
    pub = publish_node(heartbeat_ms=0)
    try:
        with Subscriber(pub.endpoint, topics=[b"cls"]) as sub:
            assert pub.wait_subscribers(1, 5000)
            pub.process("events_in", Packet("metrics", "loihi.metrics_out", 0, data={"energy_pj": 1.0}))
            pub.process("events_in", Packet("labels", "cls.labels_out", 0, data={"class": 1}))
            p = sub.recv(5000)
            assert p.stream == "cls.labels_out" and sub.recv(100) is None
    finally:
        pub.close()


def test_realtime_slow_subscriber_drops_counted_and_seen_as_gaps(shared):
    events = gesture_events(shared, clip=5)
    big = np.concatenate([events] * 2)                      # ~5 MB per packet
    pub = publish_node(policy="realtime", sndhwm=2, heartbeat_ms=0)
    try:
        with Subscriber(pub.endpoint, rcvhwm=2) as sub:
            assert pub.wait_subscribers(1, 5000)
            n = 60
            worst = 0.0
            for seq in range(n):                              # the subscriber is not reading
                t0 = time.perf_counter()
                pub.process("events_in", Packet("events", "s", seq, DVS128, 0, 2_000_000, now_ns(), big))
                worst = max(worst, time.perf_counter() - t0)
            st = pub.stats()
            assert st["dropped_slow"] > 0 and st["sent"] + st["dropped_slow"] == n
            assert worst < 0.25, f"realtime publish blocked {worst * 1e3:.0f} ms"
            got = []
            th = threading.Thread(target=lambda: got.extend(p.seq for p in sub))
            th.start()
            wait_until(lambda: sub.received == st["sent"], step=lambda: th.join(0.01))
            pub.flush()                                       # eos heartbeat carries the last seq
            th.join(5)
            assert not th.is_alive()
            assert got == sorted(got) and len(got) == st["sent"]
            assert sub.missing == st["dropped_slow"] == n - len(got)
    finally:
        pub.close()


def test_heartbeats_keep_subscriber_alive_and_reveal_dead_publisher():
    pub = publish_node(heartbeat_ms=50)
    with Subscriber(pub.endpoint) as sub:
        assert not sub.alive
        assert pub.wait_subscribers(1, 5000)
        wait_until(lambda: sub.heartbeats >= 3, step=lambda: sub.recv(50))
        assert sub.alive and sub.heartbeat_ms == 50
        assert sub.recv(100) is None                          # heartbeats are not data
        pub.close()                                           # the publisher dies quietly
        t_dead = time.monotonic()
        wait_until(lambda: not sub.alive, step=lambda: sub.recv(20))
        assert 0.1 < time.monotonic() - t_dead < 2.0           # within liveness x interval


def test_lagging_subscriber_detects_its_own_lag():
    pub = publish_node(heartbeat_ms=0)
    try:
        with Subscriber(pub.endpoint, max_lag_ms=100) as sub:
            assert pub.wait_subscribers(1, 5000)
            pub.process("events_in", Packet("labels", "c", 0, sent_ns=now_ns()))
            assert sub.recv(5000).seq == 0 and 0 <= sub.lag_ns < 100e6
            pub.process("events_in", Packet("labels", "c", 1, sent_ns=now_ns() - 500_000_000))
            with pytest.raises(LagError, match=r"stream 'c' seq 1 is 5\d\d\.\d ms old"):
                sub.recv(5000)
    finally:
        pub.close()


def test_realtime_publish_drops_late_packets():
    pub = publish_node(heartbeat_ms=0, max_age_ms=10)
    try:
        pub.process("events_in", Packet("labels", "c", 0, sent_ns=now_ns() - 10**9))
        assert pub.stats()["dropped_late"] == 1 and pub.stats()["sent"] == 0
    finally:
        pub.close()


# -- Pusher -> zmq_input ----------------------------------------------------------------------

def input_node(**kw) -> ZmqInput:
    node = ZmqInput("cam", ZmqInputParams(endpoint="tcp://127.0.0.1:*", poll_ms=20, **kw))
    node.setup({})
    return node


def drive(node: ZmqInput, out: list) -> threading.Thread:
    th = threading.Thread(target=lambda: out.extend(p for _, p in node.packets()))
    th.start()
    return th


def test_pusher_into_zmq_input_delivers_every_event(shared):
    events = gesture_events(shared, clip=3)
    node = input_node(stop_on_eos=True)
    out: list[Packet] = []
    th = drive(node, out)
    try:
        with Pusher(node.endpoint) as push:
            for t0, t1, ev in windows(events, 5_000):
                push.push(ev, sensor_size=DVS128, t0_us=t0, t1_us=t1)
            push.end()
        th.join(10)
        assert not th.is_alive(), "stop_on_eos must end the source"
        assert np.concatenate([p.events for p in out]).tobytes() == events.tobytes()
        assert [p.seq for p in out] == list(range(len(out)))
        assert all(p.stream == "cam.events_out" and p.sensor_size == DVS128 for p in out)
        st = node.stats()
        assert st["received"] == len(out) and st["rejected_total"] == 0 and st["gaps_in"] == 0 and st["eos"]
    finally:
        node.stop()
        th.join(5)
        node.close()


def test_zmq_input_rejects_garbage_and_keeps_working():
    node = input_node()
    out: list[Packet] = []
    th = drive(node, out)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUSH)
    raw.connect(node.endpoint)
    ok = make_events([10, 20], [1, 2], [3, 4], [0, 1])

    def pkt(**kw):
        base = dict(kind="events", stream="cam", seq=0, sensor_size=DVS128, t0_us=0, t1_us=100, sent_ns=1, events=ok)
        return encode(Packet(**{**base, **kw}))

    hdr = msgpack.unpackb(pkt()[1])
    try:
        bad = [
            [b"\x00\xff garbage"],                                              # truncated
            [b"t", b"\xc1\xc1\xc1", b"x"],                                       # msgpack
            [b"t", msgpack.packb({**hdr, "v": 9}), pkt()[2]],                    # version
            [b"t", msgpack.packb({**hdr, "count": 5}), pkt()[2]],                # size
            [b"t", msgpack.packb({**hdr, "dtype": "ev9"}), pkt()[2]],            # dtype
            [b"t", b"\x80" * 70_000, b""],                                       # header_too_large
            pkt(sensor_size=(64, 64, 2)),                                        # sensor_size
            pkt(events=make_events([1], [128], [0], [0])),                       # out_of_bounds (x)
            pkt(events=make_events([1], [0], [0], [2])),                         # out_of_bounds (p)
            pkt(events=make_events([5, 1], [0, 0], [0, 0], [0, 0])),             # unsorted
            pkt(events=make_events([500], [0], [0], [0])),                       # window
            pkt(kind="spikes"),                                                  # unexpected_kind
        ]
        for frames in bad:
            raw.send_multipart(frames)
        raw.send(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
        raw.send_multipart(pkt(seq=1))
        wait_until(lambda: len(out) == 1)
        assert out[0].events.tobytes() == ok.tobytes()
        assert node.stats()["rejected"] == {
            "truncated": 2, "msgpack": 1, "version": 1, "size": 1, "dtype": 1, "header_too_large": 1,
            "sensor_size": 1, "out_of_bounds": 2, "unsorted": 1, "window": 1, "unexpected_kind": 1}
        assert "frame 1" in node.stats()["last_reject"]           # the random bytes, last
        raw.send_multipart(pkt(seq=2))                                       # still alive
        wait_until(lambda: len(out) == 2)
    finally:
        raw.close(0)
        ctx.term()
        node.stop()
        th.join(5)
        node.close()
    assert not th.is_alive()


def test_zmq_input_subscribes_to_a_publish_node(shared):
    events = gesture_events(shared, clip=1)
    pub = publish_node(policy="lossless", heartbeat_ms=100)
    node = ZmqInput("remote", ZmqInputParams(endpoint=pub.endpoint, bind=False, socket="sub", topic="dvs",
                                             poll_ms=20, stop_on_eos=True))
    node.setup({})
    out: list[Packet] = []
    th = drive(node, out)
    try:
        assert pub.wait_subscribers(1, 5000)
        for seq, (t0, t1, ev) in enumerate(windows(events, 20_000)):
            pub.process("events_in", Packet("events", "dvs.events_out", seq, DVS128, t0, t1, now_ns(), ev))
        pub.flush()
        th.join(10)
        assert not th.is_alive()
        assert np.concatenate([p.events for p in out]).tobytes() == events.tobytes()
    finally:
        node.stop()
        th.join(5)
        node.close()
        pub.close()


def test_pusher_times_out_without_an_input():
    with Pusher("tcp://127.0.0.1:1", timeout_ms=50, sndhwm=1) as push:
        with pytest.raises(TimeoutError, match="tcp://127.0.0.1:1"):
            for _ in range(3):
                push.push(make_events([1], [0], [0], [0]), sensor_size=DVS128)


def test_nodes_are_registered_with_validated_params():
    assert registry._REGISTRY["zmq_input"] is ZmqInput and registry._REGISTRY["publish"] is Publish
    p = build_params(Publish, {"policy": "lossless", "heartbeat_ms": 10}, key="nodes.out.params")
    assert p.policy == "lossless"
    with pytest.raises(ParamError, match="nodes.out.params.policy"):
        build_params(Publish, {"policy": "fast"}, key="nodes.out.params")
    with pytest.raises(ParamError, match=r"nodes.cam.params.sensor_size"):
        build_params(ZmqInput, {"sensor_size": [128, 128]}, key="nodes.cam.params")
    assert build_params(ZmqInput, {"sensor_size": [34, 34, 2]}).sensor_size == (34, 34, 2)
    with pytest.raises(ParamError, match=r"nodes.cam.params.sensor_size: must be positive"):
        ZmqInput("cam", ZmqInputParams(sensor_size=(34, 0, 2)))


def test_lossless_publish_waits_for_a_stalled_subscriber(shared):
    big = np.concatenate([gesture_events(shared, clip=5)] * 2)       # ~5 MB per packet
    pub = publish_node(policy="lossless", sndhwm=2, heartbeat_ms=0)
    try:
        with Subscriber(pub.endpoint, rcvhwm=2) as sub:
            assert pub.wait_subscribers(1, 5000)
            done = []

            def produce():
                for seq in range(20):
                    pub.process("events_in", Packet("events", "s", seq, DVS128, 0, 2_000_000, now_ns(), big))
                    done.append(seq)

            th = threading.Thread(target=produce)
            th.start()
            th.join(0.5)
            assert th.is_alive() and len(done) < 20, "lossless publish must wait for the subscriber"
            seqs = []
            while len(seqs) < 20:
                p = sub.recv(5000)
                assert p is not None and p.events.tobytes() == big.tobytes()
                seqs.append(p.seq)
            th.join(5)
            assert seqs == list(range(20)) and pub.stats()["dropped"] == 0 and pub.stats()["wait_ns"] > 0
    finally:
        pub.close()


def test_zmq_input_packets_iterator_yields_every_push_and_ends_at_eos():
    """A runtime that does not poll sockets itself iterates ``packets()`` (in a thread): every
    pushed packet comes out in order, and end-of-stream ends the iteration with stop_on_eos."""
    node = ZmqInput("inp", ZmqInputParams(endpoint="tcp://127.0.0.1:0", sensor_size=[34, 34, 2], stop_on_eos=True))
    node.setup({})
    ev = make_events(np.arange(100), np.zeros(100), np.zeros(100), np.ones(100))

    def push():
        with Pusher(node.endpoint, stream="cam") as p:
            for i in range(5):
                p.push(ev[i * 20:(i + 1) * 20], sensor_size=(34, 34, 2))
            p.end()

    th = threading.Thread(target=push)
    th.start()
    try:
        got = [pkt for _, pkt in node.packets()]
    finally:
        th.join(5)
        node.close()
    assert [p.count for p in got] == [20] * 5
    assert np.array_equal(np.concatenate([p.events for p in got]), ev)
    assert node.eos and node.received == 5
