"""DAT reader: gen4.dat against expelliarmus and faery, the N-CARS "Event2d" file against
expelliarmus (faery rejects that type), v1/v2 layouts, the 32-bit wrap, bad input, fuzzing."""

from __future__ import annotations

import numpy as np
import pytest

from fuzzing import fuzz_reader, mutate
from naive_prophesee import dat_data, dat_file, decode_dat, header, random_dat_pairs

from spikeflow.drivers.formats import prophesee_kernels as K
from spikeflow.drivers.formats.prophesee_header import HEAD_BYTES, parse_header
from spikeflow.drivers.recording import detect_format, open_recording, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, make_events

GEN4 = "recordings/faery-testdata/gen4.dat"
NCARS = "recordings/tonic-testdata/sample_ncars.dat"
DAT_LINES = ("Data file containing CD events.", "Version 2", "Width 64", "Height 48")


def assert_same(a, b, fields="txyp"):
    assert len(a) == len(b)
    for f in fields:
        np.testing.assert_array_equal(a[f].astype(np.int64), b[f].astype(np.int64), err_msg=f"field {f}")


def expelliarmus_dat(path):
    import expelliarmus
    return expelliarmus.Wizard(encoding="dat", fpath=path).read()


def test_gen4_matches_expelliarmus_and_faery(shared):
    import faery
    path = shared(GEN4)
    assert detect_format(path) == "dat"
    ev, info = read_recording(path)
    assert info.sensor_size == SensorSize(1280, 720, 2) and info.extra["sensor_size_source"] == "Width/Height"
    assert info.extra["event_type"] == "EventCD" and info.extra["dat_version"] == 2
    assert len(ev) == 1_218_618 and (int(ev["t"][0]), int(ev["t"][-1])) == (5_856, 10_773_853)
    assert_same(ev, expelliarmus_dat(path))
    fa = np.concatenate(list(faery.events_stream_from_file(str(path))))
    assert_same(ev, make_events(fa["t"].astype(np.int64), fa["x"], fa["y"], fa["on"].astype(np.int16)))


def test_ncars_event2d_needs_an_explicit_sensor_size(shared):
    """The N-CARS header names no geometry; the ATIS 304x240 sensor size must be given.
    Oracle: expelliarmus (faery rejects the "Event2d" type)."""
    path = shared(NCARS)
    assert detect_format(path) == "dat"
    with pytest.raises(RecordingError, match=r"sample_ncars.dat at byte 0: cannot determine the sensor size.*304, 240"):
        open_recording(path)
    ev, info = read_recording(path, sensor_size=(304, 240))
    assert info.extra["event_type"] == "Event2d" and info.sensor_size == SensorSize(304, 240, 2)
    assert len(ev) == 2_009
    assert_same(ev, expelliarmus_dat(path))
    assert int(ev["x"].max()) <= 77 and int(ev["y"].max()) <= 41


@pytest.mark.parametrize("policy", ["monotonic", "spec"])
def test_kernel_matches_naive_twin(shared, policy):
    path = shared(GEN4)
    hdr = parse_header(path.read_bytes()[:4096], at_eof=False)
    pairs = np.fromfile(path, np.uint8, offset=hdr.data_offset + 2)[:8 * 20_000].view("<u4")
    ref = decode_dat(pairs.reshape(-1, 2), policy)
    out = np.empty(len(ref), EVENT_DTYPE)
    st = K.new_state(1280, 720, K.POLICY_MONOTONIC if policy == "monotonic" else K.POLICY_SPEC)
    pos, n, status = K.dat_decode(pairs, 0, out, 0, st)
    assert (pos, n, status) == (20_000, 20_000, K.STATUS_DONE)
    assert_same(out, ref)


@pytest.mark.parametrize("policy", ["monotonic", "spec"])
@pytest.mark.parametrize("seed,cap", [(0, 1), (1, 7), (2, 1000)])
def test_kernel_resumes_like_naive_twin_on_random_streams(seed, cap, policy):
    """Random valid pairs (steps back, a forward jump, the 2^32 wrap) decoded into tiny outputs
    and pair slices, so the fast run stops and resumes everywhere: the one-pass twin."""
    rng = np.random.default_rng(seed)
    pairs = random_dat_pairs(rng, 5000)
    ref = decode_dat(pairs, policy)
    st = K.new_state(2048, 2048, K.POLICY_MONOTONIC if policy == "monotonic" else K.POLICY_SPEC)
    parts, start = [], 0
    for stop in sorted(rng.integers(0, len(pairs), 20).tolist()) + [len(pairs)]:
        piece, pos = pairs[start:stop].ravel(), 0
        while True:
            out = np.empty(cap, EVENT_DTYPE)
            pos, n, status = K.dat_decode(piece, pos, out, 0, st)
            parts.append(out[:n].copy())
            assert status in (K.STATUS_DONE, K.STATUS_FULL)
            if status == K.STATUS_DONE:
                break
        start = stop
    assert int(st[K.ST_LOOPS]) >= 1 and int(st[K.ST_BACKWARDS]) > 0
    assert_same(np.concatenate(parts), ref)


@pytest.mark.parametrize("policy", ["monotonic", "spec", "strict"])
def test_whole_file_read_equals_iteration(shared, policy):
    """read_all (mapped file, one kernel call) gives the bytes and counters of chunked iteration."""
    with open_recording(shared(GEN4), time_policy=policy) as rec:
        whole = rec.read_all()
        stats = rec.stats
    assert len(whole) == 1_218_618
    with open_recording(shared(GEN4), time_policy=policy, chunk_events=100_000) as rec:
        parts = [c.copy() for c in rec]
        assert rec.stats == stats
    assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_event_type_byte_past_the_first_header_read(tmp_path):
    """The 2-byte type/size preamble right at the edge of read_header's first read is still found."""
    for size in (HEAD_BYTES - 1, HEAD_BYTES - 2, HEAD_BYTES + 3):
        lines = (*DAT_LINES, "comment ")
        lines = (*DAT_LINES, "comment " + "x" * (size - len(header(*lines))))
        assert len(header(*lines)) == size
        p = dat_file(tmp_path / f"edge{size}.dat", [(5, dat_data(1, 2, 1))], lines=lines)
        assert read_recording(p)[0].tolist() == [(5, 1, 2, 1)]


def test_chunks_and_small_reads(shared):
    path = shared(GEN4)
    whole = read_recording(path)[0][:5000]
    parts = []
    with open_recording(path, chunk_events=333, read_bytes=100) as rec:
        for c in rec:
            assert len(c) <= 333
            parts.append(c.copy())
            if sum(map(len, parts)) >= 5000:
                break
    assert_same(np.concatenate(parts)[:5000], whole)


def test_32bit_wrap_backwards_and_v1_layout(tmp_path):
    top = (1 << 32) - 10
    pairs = [(top, dat_data(1, 2, 1)), (3, dat_data(2, 3, 0)),    # wrap: 2^32 + 3
             (2, dat_data(3, 4, 1)), (50, dat_data(4, 5, 0))]     # 2 < 3: a step back
    path = dat_file(tmp_path / "w.dat", pairs)
    w = 1 << 32
    spec = read_recording(path, time_policy="spec")[0]
    assert spec["t"].tolist() == [top, w + 3, w + 2, w + 50]
    assert spec["x"].tolist() == [1, 2, 3, 4] and spec["y"].tolist() == [2, 3, 4, 5]
    assert_same(decode_dat(pairs, "spec"), spec)
    with open_recording(path) as rec:
        assert rec.read_all()["t"].tolist() == [top, w + 3, w + 3, w + 50]
        assert rec.stats["wraps"] == 1 and rec.stats["backwards_events"] == 1
    hdr_len = len(header(*DAT_LINES)) + 2
    with pytest.raises(RecordingError, match=rf"w.dat at byte {hdr_len + 16}: timestamp goes backwards"):
        read_recording(path, time_policy="strict")
    v1 = dat_file(tmp_path / "v1.dat", [(7, 5 | (6 << 9) | (1 << 17))],
                  lines=("Data file containing Event2d events.", "Version 1", "Width 64", "Height 48"), ev_type=0)
    ev, info = read_recording(v1)
    assert info.extra["dat_version"] == 1 and ev.tolist() == [(7, 5, 6, 1)]


@pytest.mark.parametrize("pairs,match,index", [
    ([(0, dat_data(0, 0, 0)), (1, dat_data(64, 0, 0))], r"event x=64 is outside the sensor \(expected x < width 64\)", 1),
    ([(0, dat_data(0, 48, 0))], r"event y=48 is outside the sensor", 0),
    ([(0, dat_data(1, 1, 3))], r"polarity value 3 \(expected 0 or 1\)", 0),
])
def test_impossible_events_raise_with_offset(tmp_path, pairs, match, index):
    p = dat_file(tmp_path / "bad.dat", pairs)
    start = len(header(*DAT_LINES)) + 2
    with pytest.raises(RecordingError, match=rf"bad.dat at byte {start + 8 * index}: {match}"):
        read_recording(p)


def test_bad_preamble_and_truncation(tmp_path):
    start = len(header(*DAT_LINES))
    with pytest.raises(RecordingError, match=rf"at byte {start}: DAT event type 0x0E holds no CD events"):
        read_recording(dat_file(tmp_path / "trig.dat", [], ev_type=0x0E), format="dat")
    with pytest.raises(RecordingError, match=rf"at byte {start + 1}: DAT event size 16 \(expected 8\)"):
        read_recording(dat_file(tmp_path / "size.dat", [], ev_size=16), format="dat")
    p = tmp_path / "short.dat"
    p.write_bytes(header(*DAT_LINES) + b"\x0c")
    with pytest.raises(RecordingError, match=rf"at byte {start}: truncated: expected the 2-byte event type"):
        read_recording(p, format="dat")
    p = dat_file(tmp_path / "cut.dat", [(1, 0), (2, 0)])
    p.write_bytes(p.read_bytes()[:-3])
    with pytest.raises(RecordingError, match=rf"at byte {start + 2 + 8}: truncated data: 5 trailing byte"):
        read_recording(p)
    with pytest.raises(RecordingError, match="unsupported DAT version '7'"):
        read_recording(dat_file(tmp_path / "v7.dat", [], lines=("Version 7", "Width 4", "Height 4")))
    assert len(read_recording(dat_file(tmp_path / "empty.dat", []))[0]) == 0


def test_fuzz_gen4_head(shared, tmp_path):
    counts = fuzz_reader(shared(GEN4), tmp_path, format="dat", n_mutants=1000, seed=5, head_bytes=1 << 13)
    assert counts["ok"] + counts["error"] == 1000 and counts["ok"] >= 10 and counts["error"] >= 50


def test_fuzz_ncars(shared, tmp_path):
    """N-CARS names no size, so every mutant would stop at the header: the seed is the real file
    with its size lines added (the events are the real ones)."""
    data = shared(NCARS).read_bytes()
    seed = tmp_path / "ncars_sized.dat"
    seed.write_bytes(b"% Width 304\n% Height 240\n" + data)
    assert len(read_recording(seed)[0]) == 2_009
    counts = fuzz_reader(seed, tmp_path, format=None, n_mutants=1000, seed=6, head_bytes=None)
    assert counts["ok"] + counts["error"] == 1000 and counts["ok"] >= 10 and counts["error"] >= 50


def test_fuzz_whole_file_path(shared, tmp_path):
    """read_recording decodes the memory-mapped file in one pass (not the chunk loop): mutants too."""
    data = shared(GEN4).read_bytes()[:1 << 13]
    rng = np.random.default_rng(13)
    target = tmp_path / "m.dat"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        target.write_bytes(mutate(data, rng))
        try:
            read_recording(target, format="dat")
            outcomes["ok"] += 1
        except RecordingError:
            outcomes["error"] += 1
    assert outcomes["ok"] >= 5 and outcomes["error"] >= 20
