"""The native .sfe format: bit-exact round trips (hypothesis), damage reported with byte offsets, fuzz."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fuzzing import fuzz_reader
from spikeflow.drivers.formats.native import BLOCK, MAGIC, NativeWriter
from spikeflow.drivers.recording import detect_format, open_recording, open_writer, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize


def _write(path, ev, sensor=(640, 480, 2), block_events=1000, extra=None, pieces=1):
    with NativeWriter(path, sensor, extra=extra, block_events=block_events) as w:
        for part in np.array_split(ev, pieces):
            w.write(part)
    return path


@pytest.fixture
def evt2_like(shared):
    """Real events: a DVSGesture clip (sorted, 128x128)."""
    return read_recording(shared("recordings/slayer-dvsgesture/9.bs2"), dataset="dvsgesture")[0]


_events = arrays(EVENT_DTYPE, st.integers(0, 3000),
                 elements=st.tuples(st.integers(-2**62, 2**62), st.integers(-2**15, 2**15 - 1),
                                    st.integers(-2**15, 2**15 - 1), st.integers(-2**15, 2**15 - 1)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ev=_events, block=st.integers(1, 700), pieces=st.integers(1, 5))
def test_any_event_array_round_trips_bit_exactly(tmp_path_factory, ev, block, pieces):
    path = tmp_path_factory.mktemp("h") / "a.sfe"
    _write(path, ev, sensor=(7, 9, 3), block_events=block, pieces=pieces)
    back, info = read_recording(path)
    assert info.sensor_size == SensorSize(7, 9, 3)
    assert back.dtype == EVENT_DTYPE
    assert back.tobytes() == ev.tobytes()


def test_real_recording_round_trip_and_metadata(evt2_like, tmp_path):
    path = _write(tmp_path / "g.sfe", evt2_like, sensor=(128, 128, 2), block_events=1 << 16,
                  extra={"label": 9, "camera": "DVS128"}, pieces=7)
    with open_recording(path, chunk_events=5000) as rec:
        assert rec.info.format == "native" and rec.info.extra == {"label": 9, "camera": "DVS128"}
        chunks = list(rec)
    assert max(map(len, chunks)) <= 5000
    np.testing.assert_array_equal(np.concatenate(chunks), evt2_like)
    assert path.stat().st_size < evt2_like.nbytes  # compressed


def test_open_writer_by_extension(evt2_like, tmp_path):
    with open_writer(tmp_path / "x.sfe", (128, 128)) as w:
        assert w.format_name == "native"
        w.write(evt2_like)
    np.testing.assert_array_equal(read_recording(tmp_path / "x.sfe")[0], evt2_like)


def _blocks(path):
    """Byte offsets of every block header."""
    data = path.read_bytes()
    (hlen,) = struct.unpack("<I", data[8:12])
    off, out = 12 + hlen, []
    while off < len(data):
        out.append(off)
        _, _, plen, _, _ = BLOCK.unpack(data[off:off + BLOCK.size])
        off += BLOCK.size + plen
    return out


def test_truncation_inside_each_block_names_its_offset(evt2_like, tmp_path):
    path = _write(tmp_path / "g.sfe", evt2_like[:5000], block_events=1000)
    data = path.read_bytes()
    offs = _blocks(path)
    assert len(offs) == 5
    for off in offs[1:]:
        cut = tmp_path / "cut.sfe"
        cut.write_bytes(data[:off + 10])
        with pytest.raises(RecordingError, match=rf"cut\.sfe at byte {off}: truncated block header"):
            read_recording(cut)
        cut.write_bytes(data[:off + BLOCK.size + 3])
        with pytest.raises(RecordingError, match=rf"at byte {off + BLOCK.size}: truncated block payload"):
            read_recording(cut)


def test_corruption_is_caught_by_crc_with_offset(evt2_like, tmp_path):
    path = _write(tmp_path / "g.sfe", evt2_like[:3000], block_events=1000)
    offs = _blocks(path)
    data = bytearray(path.read_bytes())
    data[offs[2] + BLOCK.size + 40] ^= 0x10
    bad = tmp_path / "bad.sfe"
    bad.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=rf"bad\.sfe at byte {offs[2] + BLOCK.size}: block CRC mismatch"):
        read_recording(bad)
    data = bytearray(path.read_bytes())
    data[offs[2] + 16] ^= 0x01  # a flipped bit in the block header's t_first (covered by the CRC)
    bad.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=rf"bad\.sfe at byte {offs[2] + BLOCK.size}: block CRC mismatch"):
        read_recording(bad)
    data = bytearray(path.read_bytes())
    data[offs[1]:offs[1] + 4] = b"XXXX"
    bad.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=rf"at byte {offs[1]}: expected block magic"):
        read_recording(bad)


def test_header_damage(tmp_path):
    good = _write(tmp_path / "g.sfe", np.zeros(3, EVENT_DTYPE))
    data = good.read_bytes()
    cases = {
        "magic": (b"\x89SFX" + data[4:], r"at byte 0: not a spikeflow \.sfe file"),
        "hlen": (data[:8] + struct.pack("<I", 10**6) + data[12:], r"at byte 8: header length"),
        "json": (data[:12] + b"X" + data[13:], r"at byte 12: corrupt JSON header"),
        "version": (None, r"at byte 12: unsupported \.sfe version 7"),
    }
    hdr = json.dumps({"version": 7, "sensor_size": [1, 1, 2], "extra": {}}).encode()
    cases["version"] = (MAGIC + struct.pack("<I", len(hdr)) + hdr, cases["version"][1])
    for name, (blob, msg) in cases.items():
        p = tmp_path / f"{name}.sfe"
        p.write_bytes(blob)
        with pytest.raises(RecordingError, match=msg):
            read_recording(p, format="native")


def test_detected_by_magic_whatever_the_name(evt2_like, tmp_path):
    p = _write(tmp_path / "clip.aedat4", evt2_like[:10])
    assert detect_format(p) == "native"


def test_fuzz_native(evt2_like, tmp_path):
    src = _write(tmp_path / "src.sfe", evt2_like[:6000], sensor=(128, 128, 2), block_events=2000)
    fz = tmp_path / "fz"
    fz.mkdir()
    counts = fuzz_reader(src, fz, format="native", n_mutants=1000)
    assert counts["ok"] > 0 and counts["error"] > 0
    counts = fuzz_reader(src, fz, format=None, n_mutants=200, seed=1)
    assert sum(counts.values()) == 200


def test_continue_file_cuts_back_to_a_block_and_appends(evt2_like, tmp_path):
    """What ``record`` does in a restarted worker: keep the blocks up to a committed offset, cut
    what a killed writer left after it (a whole block and half of another), append the rest."""
    ev = evt2_like[:5000]
    path = tmp_path / "c.sfe"
    w = NativeWriter(path, (128, 128, 2), extra={"k": 1}, block_events=1000)
    w.write(ev[:1500])
    w.flush()                            # blocks of 1000 and 500: a commit at a packet boundary
    committed = w.tell()
    w.write(ev[1500:2600])               # a block of 1000 reaches the file, the rest is buffered
    w._f.write(b"SFB1" + b"\x00" * 10)   # and a block is half written when the process dies
    w._f.close()                         # (the buffered 100 events die with it)
    w = NativeWriter.continue_file(path, committed, block_events=1000)
    assert w.events_written == 1500 and w.tell() == committed
    w.write(ev[1500:])
    w.close()
    got, info = read_recording(path)
    np.testing.assert_array_equal(got, ev)
    assert info.sensor_size == (128, 128, 2) and info.extra == {"k": 1}
    with pytest.raises(RecordingError, match=rf"c\.sfe at byte .*: byte {committed - 7} is not the end of a block"):
        NativeWriter.continue_file(path, committed - 7)
    data = bytearray(path.read_bytes())
    data[committed - 3] ^= 0xFF          # the last block before the offset is damaged
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="block CRC mismatch"):
        NativeWriter.continue_file(path, committed)
