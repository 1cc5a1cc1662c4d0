"""AEDAT 2.0 reader: real MNIST-DVS files against tonic, jAER layouts, wraps, bad input, fuzzing.

Oracle: tonic.io (``read_aedat_header_from_file`` + ``get_aer_events_from_file``) gives the raw
(address, timestamp) pairs independently of us; we apply jAER's DVS128 extractor formula
(x = 127 - bits 1..7, y = bits 8..14, ON = raw bit 0 clear; jAER DVS128.java) to its addresses.
tonic's own ``read_dvs_128`` is not an oracle: in tonic 1.7 it fails (it unpacks two of the three
values ``read_aedat_header_from_file`` returns), and its formula swaps x/y and keeps the raw polarity.
"""

from __future__ import annotations

import numpy as np
import pytest
import tonic.io

from fuzzing import fuzz_reader
from naive_aedat import naive_aedat2
from spikeflow.drivers.formats import aedat_kernels as K
from spikeflow.drivers.recording import detect_format, open_recording, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE

MNIST = {
    "recordings/mnist-dvs/mnist_0_scale04_0001.aedat": 15744,
    "recordings/mnist-dvs/mnist_0_scale04_0001_qt1.aedat": 1782,
    "recordings/mnist-dvs/mnist_0_scale08_0001_qt1.aedat": 5078,
    "recordings/mnist-dvs/mnist_0_scale16_0001_qt1.aedat": 11209,
}


def write_aedat2(path, addr, ts, chip: str | None = "ch.unizh.ini.jaer.chip.retina.DVS128"):
    """A jAER-style AEDAT 2.0 file with the given raw records."""
    head = "#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
    if chip:
        head += f"# AEChip: {chip}\r\n"
    rec = np.empty((len(addr), 2), ">u4")
    rec[:, 0] = np.asarray(addr, np.uint64).astype(np.uint32)
    rec[:, 1] = np.asarray(ts, np.uint64).astype(np.uint32)
    path.write_bytes(head.encode() + rec.tobytes())
    return path


@pytest.mark.parametrize("rel", sorted(MNIST))
def test_mnist_dvs_matches_tonic(shared, rel):
    path = shared(rel)
    ev, info = read_recording(path)
    version, start, _ = tonic.io.read_aedat_header_from_file(str(path))
    raw = tonic.io.get_aer_events_from_file(str(path), version, start)
    a = raw["address"].astype(np.int64)
    assert info.format == "aedat2" and tuple(info.sensor_size) == (128, 128, 2)
    assert info.extra["data_start"] == start == 216 and info.extra["chip_assumed"]
    assert len(ev) == len(raw) == MNIST[rel]
    assert np.array_equal(ev["t"], raw["timeStamp"].astype(np.int64))
    assert np.array_equal(ev["x"], 127 - ((a >> 1) & 0x7F))
    assert np.array_equal(ev["y"], (a >> 8) & 0x7F)
    assert np.array_equal(ev["p"], 1 - (a & 1))


def test_raw_layout_and_chunking(shared):
    path = shared("recordings/mnist-dvs/mnist_0_scale04_0001.aedat")
    data = path.read_bytes()[216:]
    a = np.frombuffer(data, ">u4")[0::2].astype(np.int64)
    with open_recording(path, layout="raw", chunk_events=1000) as rec:
        chunks = list(rec)
    assert max(len(c) for c in chunks) == 1000 and len(chunks) == 16
    ev = np.concatenate(chunks)
    assert np.array_equal(ev["x"], (a >> 1) & 127) and np.array_equal(ev["p"], a & 1)
    assert np.array_equal(ev, read_recording(path, layout="raw")[0])


def test_detect_and_header_only_davis(shared):
    path = shared("recordings/tonic-testdata/sample_aedat_header.aedat")
    assert detect_format(path) == "aedat2"
    ev, info = read_recording(path)
    _, _, start_ts = tonic.io.read_aedat_header_from_file(str(path))
    assert len(ev) == 0 and tuple(info.sensor_size) == (346, 260, 2)
    assert info.extra["family"] == "davis" and info.extra["chip"].endswith("Davis346red")
    assert info.extra["start_time_ms"] == start_ts == 1695355587880


def test_timestamp_wrap_adds_2_pow_32(tmp_path):
    ts = [2**32 - 20, 2**32 - 10, 2**32 - 1, 5, 17]
    addr = [(i << 8) | (3 << 1) for i in range(5)]
    ev, info = read_recording(write_aedat2(tmp_path / "w.aedat", addr, ts))
    assert ev["t"].tolist() == [2**32 - 20, 2**32 - 10, 2**32 - 1, 2**32 + 5, 2**32 + 17]
    assert ev["y"].tolist() == [0, 1, 2, 3, 4] and set(ev["x"]) == {124}
    assert info.extra["wraps"] == 1


def test_small_backward_step_is_an_error_or_kept(tmp_path):
    path = write_aedat2(tmp_path / "b.aedat", [0, 2, 4, 6], [100, 200, 150, 300])
    data_start = len(path.read_bytes()) - 32
    with pytest.raises(RecordingError) as e:
        read_recording(path)
    assert e.value.offset == data_start + 16 and "backwards" in str(e.value) and str(path) in str(e.value)
    ev, _ = read_recording(path, strict_time=False)
    assert ev["t"].tolist() == [100, 200, 150, 300]


def test_special_events_skipped_and_counted(tmp_path):
    path = write_aedat2(tmp_path / "s.aedat", [0x8000, 0x0103, 0x80000000], [1, 2, 3])
    ev, info = read_recording(path)
    assert len(ev) == 1 and (ev["x"][0], ev["y"][0], ev["p"][0]) == (126, 1, 0)
    assert info.extra["skipped_special"] == 2


def test_davis_layout(tmp_path):
    def dvs(x, y, p):
        return (y << 22) | (x << 12) | (p << 11)
    addr = [dvs(0, 0, 1), dvs(345, 259, 0), 0x80000000 | 5, (1 << 10) | 3, dvs(10, 20, 1)]
    path = write_aedat2(tmp_path / "d.aedat", addr, [1, 2, 3, 4, 5], chip="eu.seebetter.ini.chips.davis.Davis346B")
    ev, info = read_recording(path)
    assert tuple(info.sensor_size) == (346, 260, 2)
    assert [tuple(int(v) for v in e) for e in ev[["t", "x", "y", "p"]].tolist()] == [
        (1, 345, 0, 1), (2, 0, 259, 0), (5, 335, 20, 1)]
    assert info.extra["skipped_aps_imu"] == 1 and info.extra["skipped_special"] == 1
    raw, _ = read_recording(path, layout="raw")
    assert raw["x"].tolist() == [0, 345, 10]


def test_sensor_size_option_and_impossible_coordinates(shared, tmp_path):
    path = shared("recordings/mnist-dvs/mnist_0_scale04_0001_qt1.aedat")
    with pytest.raises(RecordingError, match="outside the 64x64 sensor") as e:
        read_recording(path, sensor_size=(64, 64))
    assert e.value.offset >= 216 and (e.value.offset - 216) % 8 == 0
    unknown = write_aedat2(tmp_path / "u.aedat", [2], [1], chip="org.example.MysteryChip")
    with pytest.raises(RecordingError, match="unknown AEChip"):
        read_recording(unknown)
    ev, info = read_recording(unknown, sensor_size=(128, 128), family="dvs128")
    assert len(ev) == 1 and info.sensor_size.width == 128


def test_truncated_and_wrong_magic(shared, tmp_path):
    data = shared("recordings/mnist-dvs/mnist_0_scale04_0001_qt1.aedat").read_bytes()
    cut = tmp_path / "cut.aedat"
    cut.write_bytes(data[:-3])
    with pytest.raises(RecordingError, match="truncated") as e:
        read_recording(cut)
    assert e.value.offset == len(data) - 8
    bad = tmp_path / "bad.aedat"
    bad.write_bytes(b"#!AER-DAT9.9\r\n" + data[14:])
    with pytest.raises(RecordingError, match="expected AEDAT 2.0"):
        read_recording(bad, format="aedat2")
    with pytest.raises(RecordingError, match="AER-DAT") as e:
        read_recording(_write(tmp_path / "junk.aedat", b"hello world\n"), format="aedat2")
    assert e.value.offset == 0
    header_line_unterminated = _write(tmp_path / "h.aedat", b"#!AER-DAT2.0\r\n# no end of line")
    with pytest.raises(RecordingError, match="truncated header"):
        read_recording(header_line_unterminated)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("family", ["dvs128", "davis"])
def test_kernel_matches_naive(seed, family):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    ts = np.cumsum(rng.integers(0, 2**28, n)).astype(np.uint64) % 2**32  # wraps several times
    if family == "dvs128":
        addr = rng.integers(0, 2**15, n) | np.where(rng.random(n) < 0.05, 0x8000, 0)
        width, height, layout = 128, 128, K.LAYOUT_DVS128_JAER
    else:
        addr = (rng.integers(0, 260, n) << 22) | (rng.integers(0, 346, n) << 12) | (rng.integers(0, 2, n) << 11)
        addr |= np.where(rng.random(n) < 0.05, 0x80000000, 0) | np.where(rng.random(n) < 0.05, 0x400, 0)
        width, height, layout = 346, 260, K.LAYOUT_DAVIS_JAER
    rec = np.empty((n, 2), ">u4")
    rec[:, 0], rec[:, 1] = addr.astype(np.uint32), ts.astype(np.uint32)
    data = rec.tobytes()
    ev = np.zeros(n, EVENT_DTYPE)
    buf = np.frombuffer(b"pad" + data, np.uint8)  # records from a non-zero start
    k, err, _, _, _, _, _, _ = K.aedat2_decode(buf, 3, len(buf), layout, width, height, True, -1, 0,
                                               ev.view(np.uint8), 0)
    assert err == 0
    got = np.stack([ev[f][:k].astype(np.int64) for f in "txyp"], axis=1)
    assert np.array_equal(got, naive_aedat2(data, family, width))


def test_fuzz_mnist_dvs(shared, tmp_path):
    counts = fuzz_reader(shared("recordings/mnist-dvs/mnist_0_scale04_0001_qt1.aedat"), tmp_path,
                         format=None, n_mutants=1000, head_bytes=4096)
    assert counts["ok"] + counts["error"] == 1000 and counts["ok"] > 100 and counts["error"] > 50


def test_long_header_read_in_steps(tmp_path):
    """jAER headers embed preference XML: a 300 KB header must still end at the right byte."""
    head = b"#!AER-DAT2.0\r\n" + b"".join(b"#<pref key='k%05d' value='" + b"v" * 80 + b"'/>\r\n" for i in range(3000))
    rec = np.array([[(5 << 8) | (7 << 1), 42]], ">u4").tobytes()
    path = tmp_path / "long.aedat"
    path.write_bytes(head + rec)
    ev, info = read_recording(path)
    assert info.extra["data_start"] == len(head) and info.extra["header_lines"] == 3001
    assert ev[["t", "x", "y", "p"]].tolist() == [(42, 120, 5, 1)]


def test_large_file_streams_in_chunks(shared, tmp_path):
    """Files over WHOLE_FILE_BYTES are read block by block, not whole: same events as tonic's
    raw words + jAER's formula, in chunks or at once, with specials and a wrap counted."""
    from spikeflow.drivers.formats import aedat2 as A2

    data = shared("recordings/mnist-dvs/mnist_0_scale04_0001.aedat").read_bytes()
    rec = np.frombuffer(data[216:], ">u4").reshape(-1, 2).astype(np.int64)
    copies = A2.WHOLE_FILE_BYTES // len(data) + 2
    addr = np.concatenate([rec[:, 0]] * copies)
    addr[::1000] |= 0x8000  # sync events: skipped and counted
    ts = np.concatenate([rec[:, 1] + k * 2_300_000 for k in range(copies)]) + (2**32 - 5_000_000)  # wraps once
    path = write_aedat2(tmp_path / "big.aedat", addr, ts % 2**32, chip=None)
    assert path.stat().st_size > A2.WHOLE_FILE_BYTES
    with open_recording(path, chunk_events=50_000) as r:
        chunks = list(r)
        extra = dict(r.info.extra)
    whole, info = read_recording(path)
    keep = (addr & 0x8000) == 0
    t_ref = ts[keep]
    assert max(map(len, chunks)) <= 50_000 and np.array_equal(np.concatenate(chunks), whole)
    assert np.array_equal(whole["t"], t_ref) and np.array_equal(whole["x"], 127 - ((addr[keep] >> 1) & 0x7F))
    assert np.array_equal(whole["p"], 1 - (addr[keep] & 1)) and np.array_equal(whole["y"], (addr[keep] >> 8) & 0x7F)
    for x in (extra, info.extra):
        assert x["wraps"] == 1 and x["skipped_special"] == int((~keep).sum())
