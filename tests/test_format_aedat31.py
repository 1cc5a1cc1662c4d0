"""AEDAT 3.1 reader and writer.

No real AEDAT 3.1 recording exists in ../shared, so real DVS128 Gesture events (SLAYER's
``.bs2`` clips, decoded by ``tonic.io.read_mnist_file``) are written with our writer and read
back. Oracle for the written bytes: tonic's own AEDAT 3 path (``read_aedat_header_from_file`` +
``get_aer_events_from_file``, with the DvsGesture bit layout of ``tonic.io.read_dvs_ibm``),
an implementation independent of ours. It ignores eventNumber/valid bits/other packet types
and eventTSOverflow, so it is used only on files without them. The ``aedat`` and
``dv-processing`` packages read AEDAT 4 only (checked: both reject 3.1), so they cannot serve.
Packets the writer never produces (special, invalid, partially filled, overflowed) are built
by hand below and checked against a slow twin decoder.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tonic.io

from fuzzing import fuzz_reader
from naive_aedat import naive_aedat31
from spikeflow.drivers.recording import detect_format, get_format, open_recording, open_writer, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, make_events

HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#Start-Time: 2017-02-07 16:40:40 (TZ-0800)\r\n#!END-HEADER\r\n"
BS2_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i2")])


def gesture_events(shared, clips=range(1, 11), gap_us=2_000_000):
    """Real DVS128 Gesture clips back to back (clip i starts at (i-1) * gap_us)."""
    parts = []
    for k, i in enumerate(clips):
        r = tonic.io.read_mnist_file(str(shared(f"recordings/slayer-dvsgesture/{i}.bs2")), dtype=BS2_DTYPE)
        parts.append(make_events(r["t"] + k * gap_us, r["x"], r["y"], r["p"]))
    return np.concatenate(parts)


def packet(ptype, events_bytes: bytes, size=8, tsoff=4, overflow=0, capacity=None, number=None, valid=None, source=1):
    cap = len(events_bytes) // size if capacity is None else capacity
    num = cap if number is None else number
    val = num if valid is None else valid
    return struct.pack("<hhiiiiii", ptype, source, size, tsoff, overflow, cap, num, val) + events_bytes


def pol(x, y, p, ts, valid=1):
    return struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, ts)


@pytest.fixture(scope="module")
def gesture_file(tmp_path_factory):
    from conftest import shared_file
    ev = gesture_events(shared_file)
    path = tmp_path_factory.mktemp("a31") / "user01_real.aedat"
    with open_writer(path, (128, 128)) as w:  # .aedat -> the only .aedat writer, AEDAT 3.1
        w.write(ev[:300_000])
        w.write(ev[300_000:])
    return path, ev


def test_round_trip_real_gesture_events(gesture_file):
    path, ev = gesture_file
    assert detect_format(path) == "aedat31"
    back, info = read_recording(path)
    assert len(back) == len(ev) == 1_206_710  # sum of the 10 clips in MANIFEST.md
    assert np.array_equal(back, ev)
    assert tuple(info.sensor_size) == (128, 128, 2) and info.extra["sources"] == {"Source 1": "DVS128"}
    assert info.extra["polarity_packets"] == -(-300_000 // 4096) + -(-(len(ev) - 300_000) // 4096)
    assert info.extra["skipped_packets"] == 0 and info.extra["invalid_events"] == 0


def test_written_file_matches_tonic_aedat3_decoder(gesture_file):
    path, ev = gesture_file
    version, start, _ = tonic.io.read_aedat_header_from_file(str(path))
    raw = tonic.io.get_aer_events_from_file(str(path), version, start)
    a = raw["address"].astype(np.int64)
    assert version == 3.1 and start == open_recording(path).info.extra["data_start"]
    assert len(raw) == len(ev)
    assert np.array_equal(raw["timeStamp"].astype(np.int64), ev["t"])
    assert np.array_equal((a >> 17) & 0x1FFF, ev["x"]) and np.array_equal((a >> 2) & 0x1FFF, ev["y"])
    assert np.array_equal((a >> 1) & 1, ev["p"])


@pytest.mark.parametrize("chunk", [1, 777, 4096, 100_000])
def test_chunks_are_bounded_and_complete(gesture_file, chunk):
    path, ev = gesture_file
    n = 0
    with open_recording(path, chunk_events=chunk) as rec:
        for c in rec:
            assert 0 < len(c) <= chunk
            assert np.array_equal(c, ev[n:n + len(c)])
            n += len(c)
            if chunk == 1 and n > 5000:
                break
    assert n == (5001 if chunk == 1 else len(ev))


def test_overflow_splits_packets_and_round_trips(tmp_path):
    t = np.array([0, 2**31 - 2, 2**31 - 1, 2**31, 2**31 + 5, 3 * 2**31 + 7], np.int64)
    ev = make_events(t, [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1], [0, 1, 0, 1, 0, 1])
    path = tmp_path / "ovf.aedat"
    with open_writer(path, (346, 260), format="aedat31") as w:
        w.write(ev)
    back, info = read_recording(path)
    assert np.array_equal(back, ev) and info.extra["polarity_packets"] == 3
    assert tuple(info.sensor_size) == (346, 260, 2)  # from the dvsSizeX/dvsSizeY header attributes


def test_hand_built_packets_special_invalid_partial(tmp_path):
    body = (packet(0, struct.pack("<Ii", 1, 10) * 2)                              # special events: skipped
            + packet(1, pol(1, 2, 1, 11) + pol(3, 4, 0, 12, valid=0) + pol(5, 6, 1, 13))  # one invalid
            + packet(2, b"\x07" * 300, size=100, tsoff=96)                           # a "frame" packet
            + packet(1, pol(7, 8, 0, 5) + pol(9, 9, 1, 99), overflow=1, number=1)    # trailing slot unused
            + packet(1, b"", capacity=0))
    path = tmp_path / "mix.aedat"
    path.write_bytes(HEADER + body)
    ev, info = read_recording(path)
    assert ev[["t", "x", "y", "p"]].tolist() == [(11, 1, 2, 1), (13, 5, 6, 1), (2**31 + 5, 7, 8, 0)]
    assert np.array_equal(np.stack([ev[f].astype(np.int64) for f in "txyp"], 1), naive_aedat31(body))
    assert info.extra["skipped_packets"] == 2 and info.extra["skipped_events"] == 5
    assert info.extra["invalid_events"] == 1 and info.extra["polarity_packets"] == 3


def test_labels_path_reported(tmp_path):
    path = tmp_path / "user02_led.aedat"
    path.write_bytes(HEADER + packet(1, pol(1, 1, 1, 1)))
    (tmp_path / "user02_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,0,5\n")
    assert read_recording(path)[1].extra["labels_path"].endswith("user02_led_labels.csv")


def _err(tmp_path, data: bytes, **kw) -> RecordingError:
    path = tmp_path / "bad.aedat"
    path.write_bytes(data)
    with pytest.raises(RecordingError) as e:
        read_recording(path, format="aedat31", **kw)
    assert str(path) in str(e.value)
    return e.value


def test_bad_input(tmp_path):
    h = len(HEADER)
    good = packet(1, pol(1, 2, 1, 10) + pol(2, 3, 0, 20))
    e = _err(tmp_path, HEADER + good + good[:40])
    assert e.offset == h + len(good) and "truncated" in str(e)
    e = _err(tmp_path, HEADER + good + packet(1, pol(1, 1, 1, 30), number=2))
    assert e.offset == h + len(good) and "corrupt packet header" in str(e)
    e = _err(tmp_path, HEADER + packet(1, pol(1, 1, 1, 30), size=4, tsoff=0))
    assert e.offset == h and "eventSize" in str(e)
    e = _err(tmp_path, HEADER + packet(1, pol(200, 1, 1, 30)))
    assert e.offset == h + 28 and "outside the 128x128" in str(e)
    e = _err(tmp_path, HEADER + packet(1, pol(1, 1, 1, 30) + pol(1, 1, 1, 29)))
    assert e.offset == h + 36 and "backwards" in str(e)
    ev, _ = read_recording(tmp_path / "bad.aedat", strict_time=False)
    assert ev["t"].tolist() == [30, 29]
    e = _err(tmp_path, HEADER + packet(1, pol(1, 1, 1, -5)))
    assert e.offset == h + 28 and "negative" in str(e)
    e = _err(tmp_path, HEADER.replace(b"#!END-HEADER\r\n", b"") + good)
    assert "END-HEADER" in str(e)
    e = _err(tmp_path, HEADER.replace(b"DVS128", b"Mystery9") + good)
    assert e.offset == 0 and "sensor_size" in str(e)
    ev, info = read_recording(tmp_path / "bad.aedat", sensor_size=(4, 4))
    assert len(ev) == 2 and info.sensor_size.width == 4
    e = _err(tmp_path, b"#!AER-DAT2.0\r\n" + good)
    assert e.offset == 9 and "expected AEDAT 3.1" in str(e)


def test_writer_rejects_what_it_cannot_store(tmp_path):
    with open_writer(tmp_path / "w.aedat", (128, 128)) as w:
        with pytest.raises(RecordingError, match="inside 128x128"):
            w.write(make_events([1], [128], [0], [1]))
        with pytest.raises(RecordingError, match="t >= 0"):
            w.write(make_events([-1], [1], [0], [1]))
        w.write(make_events([5, 6], [1, 2], [0, 0], [1, 0]))
        with pytest.raises(RecordingError, match="non-decreasing"):
            w.write(make_events([4], [1], [0], [1]))
    assert len(read_recording(tmp_path / "w.aedat")[0]) == 2


@pytest.mark.parametrize("seed", range(8))
def test_packet_walker_matches_naive(tmp_path, seed):
    rng = np.random.default_rng(seed)
    body, t = b"", 0
    for _ in range(int(rng.integers(1, 30))):
        kind = int(rng.integers(0, 4))
        if kind == 0:
            size = int(rng.integers(8, 64))
            body += packet(int(rng.integers(2, 9)), bytes(rng.integers(0, 256, size * int(rng.integers(0, 5)), np.uint8)),
                           size=size, tsoff=size - 4)
            continue
        n = int(rng.integers(0, 50))
        size = 8 if kind < 3 else int(rng.integers(8, 20))
        evs = b""
        for _ in range(n):
            t += int(rng.integers(0, 1000))
            e = pol(int(rng.integers(0, 128)), int(rng.integers(0, 128)), int(rng.integers(0, 2)),
                    t % 2**31, valid=int(rng.random() > 0.1))
            evs += e[:4] + b"\0" * (size - 8) + e[4:]
        body += packet(1, evs, size=size, tsoff=size - 4, overflow=t >> 31,
                       number=int(rng.integers(0, n + 1)) if kind == 2 else None)
    path = tmp_path / f"r{seed}.aedat"
    path.write_bytes(HEADER + body)
    ev, _ = read_recording(path, chunk_events=int(rng.integers(1, 64)))
    assert np.array_equal(np.stack([ev[f].astype(np.int64) for f in "txyp"], 1).reshape(-1, 4), naive_aedat31(body))


def test_fuzz_aedat31(gesture_file, tmp_path):
    _, ev = gesture_file
    path = tmp_path / "head.aedat"  # a complete small file (whole packets): mutants may stay valid
    with get_format("aedat31").writer(path, (128, 128), packet_events=256) as w:
        w.write(ev[:1500])
    counts = fuzz_reader(path, tmp_path, format=None, n_mutants=1000, head_bytes=None)
    assert counts["ok"] + counts["error"] == 1000 and counts["error"] > 100 and counts["ok"] > 20


def test_empty_recording_reads_as_no_events(tmp_path):
    path = tmp_path / "empty.aedat"
    path.write_bytes(HEADER)
    ev, info = read_recording(path)
    assert len(ev) == 0 and ev.dtype == EVENT_DTYPE and info.extra["polarity_packets"] == 0


def test_memory_is_bounded_by_the_chunk_not_the_file(gesture_file):
    import tracemalloc

    path, ev = gesture_file
    assert path.stat().st_size > 9_000_000
    tracemalloc.start()
    n = 0
    with open_recording(path, chunk_events=10_000) as rec:
        for c in rec:
            n += len(c)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == len(ev) and peak < 3 << 20  # 1 MiB read buffer + two 140 kB chunks + small change
