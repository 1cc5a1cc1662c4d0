"""Wire protocol v1: round trips, zero-copy receive, every rejection reason, fuzzing, spec agreement."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeflow.service import protocol
from spikeflow.service.errors import ProtocolError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, make_events
from spikeflow.service.packet import Packet
from spikeflow.service.protocol import (PROTOCOL_VERSION, ProtocolRejected, RejectCounter, SeqTracker,
                                        decode, encode, recv_packet, send_packet)

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def gesture_events(shared, n=5000):
    """Real DVS128 events (DvsGesture clip 1) as EVENT_DTYPE."""
    import tonic.io

    raw = tonic.io.read_mnist_file(str(shared("recordings/slayer-dvsgesture/1.bs2")),
                                   dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    return make_events(raw["t"][:n], raw["x"][:n], raw["y"][:n], raw["p"][:n])


def same(a: Packet, b: Packet):
    assert (a.kind, a.stream, a.seq, a.sensor_size, a.t0_us, a.t1_us, a.sent_ns) == \
           (b.kind, b.stream, b.seq, b.sensor_size, b.t0_us, b.t1_us, b.sent_ns)
    if a.events is None and a.kind not in ("events", "spikes"):
        assert b.events is None
    else:
        ae = a.events if a.events is not None else np.zeros(0, EVENT_DTYPE)
        assert b.events.dtype == EVENT_DTYPE
        assert ae.tobytes() == b.events.tobytes()
    assert set(a.data) == set(b.data)
    for k, v in a.data.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(b.data[k], v)
            assert b.data[k].dtype == v.dtype.newbyteorder("<") or b.data[k].dtype == v.dtype
        else:
            assert b.data[k] == v


# -- round trips -------------------------------------------------------------------------------

def test_round_trip_every_kind(shared):
    ev = gesture_events(shared)
    packets = [
        Packet("events", "dvs.events_out", 3, SensorSize(128, 128, 2), 0, 10_000, 123, ev),
        Packet("spikes", "conv1.spikes_out", 0, SensorSize(32, 32, 30), 5, 6, -1,
               make_events([1, 2], [0, 31], [31, 0], [0, 29])),
        Packet("events", "empty", 9, SensorSize(34, 34, 2), 0, 1, 0, np.zeros(0, EVENT_DTYPE)),
        Packet("labels", "cls.labels_out", 1, SensorSize(128, 128, 2), 0, 1_450_000, 42,
               data={"class": 4, "name": "right_arm_clockwise", "confidence": 0.75,
                     "scores": np.linspace(0, 1, 11, dtype=np.float32)}),
        Packet("metrics", "loihi.metrics_out", 2**64 - 1, SensorSize(0, 0, 0), -5, 5, 2**62,
               data={"energy_pj": 1.5e6, "cores": 3, "ops": np.arange(4, dtype=np.int64),
                     "nested": {"a": [1, 2, {"b": None}], "ok": True, "raw": b"\x00\x01"}}),
        Packet("heartbeat", "pub#hb", 10, sent_ns=99, data={"interval_ms": 100}),
    ]
    for p in packets:
        topic, q = decode(encode(p))
        assert topic == p.stream.encode()
        same(p, q)
    topic, q = decode(encode(packets[0], topic=b"custom"))
    assert topic == b"custom"


def test_numpy_scalars_and_big_endian_arrays_are_normalised():
    p = Packet("metrics", "m", data={"n": np.int32(5), "x": np.float64(0.5), "flag": np.bool_(True),
                                     "be": np.arange(3, dtype=">i4"), "small": (1, 2)})
    _, q = decode(encode(p))
    assert q.data["n"] == 5 and q.data["x"] == 0.5 and q.data["flag"] is True
    assert q.data["be"].dtype == np.dtype("<i4") and q.data["be"].tolist() == [0, 1, 2]
    assert q.data["small"] == [1, 2]


def test_encode_refuses_what_v1_cannot_carry():
    with pytest.raises(ProtocolError, match="seq"):
        encode(Packet("events", "s", -1, events=np.zeros(1, EVENT_DTYPE)))
    with pytest.raises(ProtocolError, match="'events' has dtype"):
        encode(Packet("events", "s", events=np.zeros(3, np.int64)))
    with pytest.raises(ProtocolError, match="object"):
        encode(Packet("metrics", "s", data={"bad": object()}))
    with pytest.raises(ProtocolError, match="no protocol v1 tag"):
        encode(Packet("metrics", "s", data={"c": np.zeros(2, np.complex64)}))
    with pytest.raises(ProtocolError, match="topic"):
        encode(Packet("heartbeat", "s"), topic=b"x" * 5000)


def test_decode_accepts_any_byte_buffer():
    frames = encode(Packet("events", "s", 1, SensorSize(4, 4, 2), 0, 10, 0, make_events([1], [2], [3], [1])))
    payload = np.frombuffer(bytes(frames[2]), dtype="<i2")          # a memoryview of 7 int16 items
    _, q = decode([bytearray(frames[0]), memoryview(bytes(frames[1])), memoryview(payload)])
    assert q.events.tolist() == [(1, 2, 3, 1)]
    with pytest.raises(ProtocolRejected, match="frame 2: frame is a non-contiguous"):
        decode([frames[0], frames[1], memoryview(np.zeros(28, np.uint8))[::2]])


def test_non_contiguous_events_are_sent_correctly():
    ev = make_events(np.arange(10), np.arange(10), np.arange(10), np.ones(10))
    _, q = decode(encode(Packet("events", "s", events=ev[::3])))
    assert q.events["t"].tolist() == [0, 3, 6, 9]


# -- zero copy over a real socket ----------------------------------------------------------------

def frame_of(arr: np.ndarray):
    """The zmq.Frame whose memory ``arr`` maps (through views and memoryviews), or None."""
    base = arr.base
    while base is not None and not isinstance(base, zmq.Frame):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return base


@pytest.mark.parametrize("transport", ["inproc", "ipc", "tcp"])
def test_zero_copy_receive_over_sockets(shared, tmp_path, transport):
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    try:
        ep = {"inproc": "inproc://zc", "ipc": f"ipc://{tmp_path}/zc.sock", "tcp": "tcp://127.0.0.1:*"}[transport]
        b.bind(ep)
        a.connect(b.getsockopt_string(zmq.LAST_ENDPOINT))
        ev = gesture_events(shared, 20_000)
        p = Packet("events", "dvs", 1, SensorSize(128, 128, 2), 0, 100, 7, ev,
                   data={"scores": np.arange(5, dtype=np.float32)})
        send_packet(a, p)
        assert b.poll(5000)
        frames = b.recv_multipart(copy=False)
        topic, q = decode(frames)
        same(p, q)
        # the payload arrays are views on the received frames' buffers, not copies
        assert isinstance(frames[2], zmq.Frame)
        assert frame_of(q.events) is frames[2]
        assert frame_of(q.data["scores"]) is frames[3]
        # recv_packet does the same in one call
        send_packet(a, p, topic=b"t")
        assert b.poll(5000)
        topic, q = recv_packet(b)
        assert topic == b"t" and isinstance(frame_of(q.events), zmq.Frame)
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


# -- rejection: every reason with crafted garbage -------------------------------------------------

def good_frames():
    return encode(Packet("events", "s", 1, SensorSize(4, 4, 2), 0, 10, 0,
                         make_events([1, 2], [0, 1], [2, 3], [0, 1]), data={"a": np.zeros(2, np.float32)}))


def with_header(**changes):
    frames = good_frames()
    h = msgpack.unpackb(frames[1])
    for k, v in changes.items():
        if v is KeyError:
            del h[k]
        else:
            h[k] = v
    frames[1] = msgpack.packb(h)
    return frames


CASES = [
    ("version", lambda: with_header(v=2), "frame 1 field 'v'"),
    ("version", lambda: with_header(v=KeyError), "'v'"),
    ("version", lambda: with_header(v=True), "'v'"),
    ("kind", lambda: with_header(kind="video"), "'kind'"),
    ("dtype", lambda: with_header(dtype="ev2"), "'dtype'"),
    ("dtype", lambda: with_header(dtype=None), "'dtype'"),
    ("dtype", lambda: with_header(arrays=[["a", "c8", [2]]]), "arrays[0]"),
    ("size", lambda: with_header(count=3), "frame 2 field 'count'"),
    ("size", lambda: good_frames()[:2] + [b"\x00" * 27] + good_frames()[3:], "frame 2"),
    ("size", lambda: with_header(arrays=[["a", "f4", [3]]]), "frame 3 field 'arrays.a'"),
    ("truncated", lambda: good_frames()[:2], "frame 2"),
    ("truncated", lambda: good_frames()[:3], "frame 3"),
    ("truncated", lambda: [b"topic"], "frame 1"),
    ("truncated", lambda: [], "frame 0"),
    ("extra_frames", lambda: good_frames() + [b"junk"], "frame 4"),
    ("header_too_large", lambda: [b"t", b"\x80" * (protocol.MAX_HEADER_BYTES + 1), b""], "frame 1"),
    ("topic_too_large", lambda: [b"t" * 2000] + good_frames()[1:], "frame 0"),
    ("msgpack", lambda: [b"t", b"\xc1garbage", b""], "frame 1"),
    ("msgpack", lambda: [b"t", msgpack.packb({"v": 1}) + b"trailing", b""], "frame 1"),
    ("msgpack", lambda: [b"t", b"\xdd\xff\xff\xff\xff", b""], "frame 1"),       # array32 of 4G items
    ("msgpack", lambda: [b"t", b"\xdb\x00\x01\x00\x00" + b"a" * 10, b""], "frame 1"),  # str32 > limit
    ("msgpack", lambda: [b"t", b"\xd4\x01\x00", b""], "frame 1"),               # ext type
    ("field", lambda: [b"t", msgpack.packb([1, 2, 3]), b""], "frame 1"),
    ("field", lambda: with_header(seq=-1), "'seq'"),
    ("field", lambda: with_header(seq="7"), "'seq'"),
    ("field", lambda: with_header(t0=2**63), "'t0'"),
    ("field", lambda: with_header(stream=5), "'stream'"),
    ("field", lambda: with_header(size=[1, 2]), "'size'"),
    ("field", lambda: with_header(size=[1, 2, -3]), "'size'"),
    ("field", lambda: with_header(sent_ns=KeyError), "'sent_ns'"),
    ("field", lambda: with_header(data=[1]), "'data'"),
    ("field", lambda: with_header(arrays=[["a", "f4"]]), "arrays[0]"),
    ("field", lambda: with_header(arrays=[["a", "f4", [-1]]]), "arrays[0]"),
    ("field", lambda: good_frames()[:2] + [object()] + good_frames()[3:], "frame 2"),
]


@pytest.mark.parametrize("reason,make,where", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_rejection_reason(reason, make, where):
    with pytest.raises(ProtocolRejected) as info:
        decode(make())
    assert info.value.reason == reason
    assert where in str(info.value)
    assert isinstance(info.value, ProtocolError)


def test_every_reason_is_covered():
    assert {c[0] for c in CASES} == set(protocol.REJECT_REASONS)


def test_recv_packet_counts_rejects_over_a_real_socket():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    try:
        port = b.bind_to_random_port("tcp://127.0.0.1")
        a.connect(f"tcp://127.0.0.1:{port}")
        rejects = RejectCounter()
        for _, make, _ in CASES[:-1]:
            frames = make() or [b""]
            a.send_multipart(frames)
        send_packet(a, Packet("heartbeat", "hb", 1))
        got = []
        while len(got) < len(CASES):
            assert b.poll(5000)
            got.append(recv_packet(b, rejects=rejects))
        assert got[:-1] == [None] * (len(CASES) - 1)
        assert got[-1][1].kind == "heartbeat"
        expected: dict[str, int] = {}
        for reason, make, _ in CASES[:-1]:
            key = "truncated" if make() == [] else reason   # an empty list is sent as one empty frame
            expected[key] = expected.get(key, 0) + 1
        assert rejects.as_dict() == expected
        assert rejects.total == len(CASES) - 1 and "frame" in rejects.last_error
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


# -- fuzzing ------------------------------------------------------------------------------------

events_st = st.integers(0, 50).flatmap(lambda n: st.tuples(
    st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n),
    st.lists(st.integers(-2**15, 2**15 - 1), min_size=n, max_size=n),
    st.lists(st.integers(-2**15, 2**15 - 1), min_size=n, max_size=n),
    st.lists(st.integers(-2**15, 2**15 - 1), min_size=n, max_size=n),
)).map(lambda c: make_events(*[np.array(x, dtype=np.int64) for x in c]))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                    st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
data_st = st.dictionaries(st.text(max_size=10), st.recursive(
    scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=5), c, max_size=4)),
    max_leaves=8), max_size=5)


@st.composite
def packets(draw):
    kind = draw(st.sampled_from(["events", "spikes", "labels", "metrics", "heartbeat"]))
    ev = draw(events_st) if kind in ("events", "spikes") else None
    data = draw(data_st)
    if draw(st.booleans()):
        tag = draw(st.sampled_from(["f4", "f8", "i8", "u1", "i2", "b1"]))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        data["arr_" + tag] = (np.arange(int(np.prod(shape)) if shape else 1) % 2).astype(
            protocol.DTYPE_TAGS[tag]).reshape(shape)
    return Packet(kind, draw(st.text(max_size=30)), draw(st.integers(0, 2**64 - 1)),
                  SensorSize(*draw(st.tuples(*[st.integers(0, 2**32 - 1)] * 3))),
                  draw(st.integers(-2**63, 2**63 - 1)), draw(st.integers(-2**63, 2**63 - 1)),
                  draw(st.integers(-2**63, 2**63 - 1)), ev, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets())
def test_hypothesis_round_trip(p):
    _, q = decode(encode(p))
    same(p, q)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_random_frames_never_crash(frames):
    try:
        decode(frames)
    except ProtocolRejected as e:
        assert e.reason in protocol.REJECT_REASONS


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_valid_messages_never_crash(data):
    frames = [bytes(f) for f in good_frames()]
    i = data.draw(st.integers(0, len(frames) - 1))
    b = bytearray(frames[i])
    for _ in range(data.draw(st.integers(1, 4))):
        if b:
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    frames[i] = bytes(b[:data.draw(st.integers(0, len(b)))])
    try:
        _, q = decode(frames)
        assert q.events is None or q.events.dtype == EVENT_DTYPE
    except ProtocolRejected as e:
        assert e.reason in protocol.REJECT_REASONS


# -- the canonical header layout and the decoder's fast path --------------------------------------

class _Forgetful(dict):
    """A prefix registry that never learns: decode then always takes the general path."""

    def __setitem__(self, key, value):
        pass


def general_decode(frames):
    saved, protocol._KNOWN = protocol._KNOWN, _Forgetful()
    try:
        return decode(frames)
    finally:
        protocol._KNOWN = saved


def outcome(fn):
    """('ok', topic, packet fields, event bytes) or ('rejected', reason, message) of a decode."""
    try:
        topic, q = fn()
    except ProtocolRejected as e:
        return ("rejected", e.reason, str(e))
    ev = None if q.events is None else q.events.tobytes()
    return ("ok", topic, q.kind, q.stream, q.seq, q.sensor_size, q.t0_us, q.t1_us, q.sent_ns, ev, q.data)


plain_packets = packets().map(lambda p: Packet(p.kind, p.stream, p.seq, p.sensor_size, p.t0_us, p.t1_us,
                                               p.sent_ns, p.events))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_packets)
def test_canonical_header_is_the_documented_layout_and_decodes_like_any_encoding(p):
    frames = encode(p)
    header = bytes(frames[1])
    h = msgpack.unpackb(header)
    # the documented layout: the five stream constants, then the five fixed-width integers
    assert list(h) == ["v", "kind", "stream", "dtype", "size", "seq", "t0", "t1", "count", "sent_ns"]
    tail = header[-65:]
    assert tail[:5] == b"\xa3seq\xcf" and tail[13:17] == b"\xa2t0\xd3" and tail[25:29] == b"\xa2t1\xd3"
    assert tail[37:44] == b"\xa5count\xce" and tail[48:57] == b"\xa7sent_ns\xd3"
    same(p, decode(frames)[1])
    # the same map with the smallest encodings and another key order (a foreign encoder)
    compact = msgpack.packb(dict(reversed(list(h.items()))))
    assert len(compact) < len(header)
    same(p, decode([frames[0], compact, *frames[2:]])[1])


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_fast_path_and_general_parse_agree_on_mutated_messages(data):
    kind = data.draw(st.sampled_from(["events", "heartbeat"]))
    ev = make_events([1, 2], [0, 1], [2, 3], [0, 1]) if kind == "events" else None
    frames = [bytes(f) for f in encode(Packet(kind, "cam.events_out", 3, SensorSize(4, 4, 2), 0, 10, 5, ev))]
    decode(frames)                                   # the prefix is known from here on
    i = data.draw(st.integers(0, len(frames) - 1))
    b = bytearray(frames[i])
    for _ in range(data.draw(st.integers(1, 3))):
        if b:
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        b = b[:data.draw(st.integers(0, len(b)))]
    frames[i] = bytes(b)
    if data.draw(st.booleans()):
        frames = frames[:-1] if data.draw(st.booleans()) else frames + [b"x" * 14]
    fast = outcome(lambda: decode(frames))
    assert fast == outcome(lambda: general_decode(frames))
    if fast[0] == "rejected":
        assert fast[1] in protocol.REJECT_REASONS


def test_receiver_learns_a_peers_canonical_prefix(monkeypatch):
    p = Packet("spikes", "conv1.spikes_out", 0, SensorSize(32, 32, 30), 0, 5, 7, make_events([1], [2], [3], [4]))
    frames = [bytes(f) for f in encode(p)]
    monkeypatch.setattr(protocol, "_KNOWN", {})      # a fresh process: nothing known yet
    monkeypatch.setattr(protocol, "_HEADS", {})
    same(p, decode(frames)[1])                       # general path, which learns the prefix
    assert list(protocol._KNOWN.values()) == [("spikes", "conv1.spikes_out", SensorSize(32, 32, 30), "ev1")]
    p.seq, p.t1_us = 1, 9
    same(p, decode(encode(p))[1])


def test_caches_stay_bounded_with_many_streams():
    for i in range(2 * protocol._CACHE_MAX + 10):
        p = Packet("heartbeat", f"s{i}", i, SensorSize(i, 1, 2), 0, 1, 0)
        same(p, decode(encode(p))[1])
    assert len(protocol._KNOWN) <= protocol._CACHE_MAX and len(protocol._HEADS) <= protocol._CACHE_MAX


def test_canonical_encode_converts_numpy_integers_and_refuses_the_rest():
    p = Packet("events", "s", np.uint64(5), SensorSize(np.int64(4), np.int32(4), np.uint8(2)), np.int32(-3),
               np.int64(10), np.int64(7), make_events([1], [2], [3], [1]))
    _, q = decode(encode(p))
    assert (q.seq, q.t0_us, q.t1_us, q.sent_ns, q.sensor_size) == (5, -3, 10, 7, (4, 4, 2))
    assert all(type(v) is int for v in (q.seq, q.t0_us, q.t1_us, q.sent_ns, *q.sensor_size))
    for field, value, name in [("seq", True, "seq"), ("seq", 2**64, "seq"), ("t1_us", 2**63, "t1"),
                               ("sent_ns", 1.5, "sent_ns"), ("stream", None, "stream"),
                               ("sensor_size", (4, 4), "size"), ("sensor_size", (4, 4, -1), "size")]:
        bad = Packet("heartbeat", "s", 1)
        object.__setattr__(bad, field, value)
        with pytest.raises(ProtocolError, match=name):
            encode(bad)


def test_an_unknown_kind_is_encoded_but_never_taken_for_valid():
    p = Packet("events", "s", 1, SensorSize(4, 4, 2), 0, 10, 0, make_events([1], [2], [3], [1]))
    p.kind = "video"
    for _ in range(2):                               # (a second time, after the encoder cached it)
        with pytest.raises(ProtocolRejected) as info:
            decode(encode(p))
        assert info.value.reason == "kind"


# -- gap tracking --------------------------------------------------------------------------------

def test_seq_tracker_counts_gaps_per_stream_and_resets():
    t = SeqTracker()
    for s, q in [("a", 0), ("a", 1), ("b", 5), ("a", 4), ("b", 6), ("b", 9), ("a", 0), ("a", 1)]:
        t.update(s, q)
    assert t.gaps == {"a": 2, "b": 2} and t.missing == 4 and t.resets == 1
    assert t.last_seq("a") == 1 and t.last_seq("zz") is None


# -- the spec document agrees with the code -----------------------------------------------------

def test_spec_version_equals_code():
    text = DOC.read_text()
    m = re.search(r"^Protocol version: \*\*(\d+)\*\*", text, re.M)
    assert m, "docs/protocol.md must state 'Protocol version: **N**'"
    assert int(m.group(1)) == PROTOCOL_VERSION
    assert f'"v": {PROTOCOL_VERSION}' in text or f"v = {PROTOCOL_VERSION}" in text


def hex_dump(frames) -> str:
    """The docs' worked-example format: one block per frame, 16 bytes per line."""
    out = []
    for i, f in enumerate(frames):
        b = bytes(f)
        out.append(f"frame {i} ({len(b)} bytes):")
        for j in range(0, len(b), 16):
            out.append("  " + " ".join(f"{x:02x}" for x in b[j:j + 16]))
    return "\n".join(out)


def worked_example() -> Packet:
    return Packet(kind="events", stream="dvs", seq=7, sensor_size=SensorSize(128, 128, 2),
                  t0_us=0, t1_us=1000, sent_ns=1_700_000_000_000_000_000,
                  events=make_events([10, 25], [3, 4], [5, 6], [1, 0]))


def test_spec_worked_example_matches_encoder():
    text = DOC.read_text()
    m = re.search(r"<!-- worked-example-begin -->\n```text\n(.*?)\n```\n<!-- worked-example-end -->", text, re.S)
    assert m, "docs/protocol.md lacks the worked example block"
    frames = encode(worked_example())
    assert m.group(1) == hex_dump(frames)
    # and the spec's hex decodes back to the same packet
    parsed = [bytes.fromhex("".join(block.split("\n", 1)[1].split())) if "\n" in block else b""
              for block in re.split(r"\n?frame \d+ \(\d+ bytes\):", m.group(1))[1:]]
    _, q = decode(parsed)
    same(worked_example(), q)


def test_spec_batch_header_and_limit_equal_code():
    """The edge-batch header bytes and the packet limit docs/protocol.md §7 states are the code's;
    a batch decodes to its packets, and a single packet is never taken for a batch."""
    from spikeflow.service.protocol import BATCH_HEADER, MAX_BATCH, decode_batch, is_batch

    text = DOC.read_text()
    assert f"`{BATCH_HEADER.hex(' ')}`" in text and f"<= {MAX_BATCH}" in text
    packets = [worked_example(), dataclasses.replace(worked_example(), seq=8)]
    frames = [encode(p) for p in packets]
    batch = [frames[0][0], BATCH_HEADER, frames[0][1], frames[0][2], frames[1][1], frames[1][2]]
    assert is_batch(batch) and not is_batch(frames[0])
    for a, b in zip(packets, decode_batch(batch)):
        same(a, b)
