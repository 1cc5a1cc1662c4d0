"""EVT 2.0 reader: both real EVT 2.0 files against expelliarmus and faery (which agree with
each other, MANIFEST), the 34-bit time wrap, time policies, chunking, bad input and fuzzing."""

from __future__ import annotations

import numpy as np
import pytest

from fuzzing import fuzz_reader, mutate
from naive_prophesee import decode_evt2, evt2_cd, evt2_file, header, random_evt2_words

from spikeflow.drivers.formats import prophesee_kernels as K
from spikeflow.drivers.formats.prophesee_header import parse_header
from spikeflow.drivers.recording import detect_format, open_recording, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, is_sorted, make_events

FILES = {  # path -> (events, first t, last t)
    "recordings/faery-testdata/evt2.raw": 521_252,
    "recordings/expelliarmus-samples/evt2_sample.raw": 539_481,
}


def assert_same(a, b, fields="txyp"):
    assert len(a) == len(b)
    for f in fields:
        np.testing.assert_array_equal(a[f].astype(np.int64), b[f].astype(np.int64), err_msg=f"field {f}")


def faery_events(path):
    import faery
    raw = np.concatenate(list(faery.events_stream_from_file(str(path))))
    return make_events(raw["t"].astype(np.int64), raw["x"], raw["y"], raw["on"].astype(np.int16))


@pytest.mark.parametrize("rel", sorted(FILES))
def test_matches_expelliarmus_and_faery(shared, rel):
    """Two independent decoders (C and Rust) that agree on these files: identical t, x, y, p."""
    import expelliarmus
    path = shared(rel)
    assert detect_format(path) == "evt2"
    ev, info = read_recording(path)
    assert len(ev) == FILES[rel]
    # no geometry line: the sensor comes from plugin_name hal_plugin_gen3_fx3 (Gen3 VGA)
    assert info.sensor_size == SensorSize(640, 480, 2)
    assert info.extra["sensor_size_source"] == "plugin_name hal_plugin_gen3_fx3"
    assert info.extra["evt_version"] == "2.0"
    assert_same(ev, expelliarmus.Wizard(encoding="evt2", fpath=path).read())
    assert_same(ev, faery_events(path))
    assert is_sorted(ev)
    assert_same(read_recording(path, time_policy="spec")[0], ev)


@pytest.mark.parametrize("chunk_events,read_bytes", [(3, 8), (1000, 4099), (1 << 16, None)])
def test_chunking_keeps_time_high_across_reads(shared, chunk_events, read_bytes):
    path = shared("recordings/faery-testdata/evt2.raw")
    whole, _ = read_recording(path)
    if chunk_events < 100:
        whole = whole[:2000]
    parts = []
    with open_recording(path, chunk_events=chunk_events, read_bytes=read_bytes) as rec:
        for c in rec:
            assert 0 < len(c) <= chunk_events
            parts.append(c.copy())
            if sum(map(len, parts)) >= len(whole):
                break
    assert_same(np.concatenate(parts)[:len(whole)], whole)


@pytest.mark.parametrize("policy", ["monotonic", "spec"])
@pytest.mark.parametrize("rel", sorted(FILES))
def test_kernel_matches_naive_twin(shared, rel, policy):
    path = shared(rel)
    hdr = parse_header(path.read_bytes()[:4096], at_eof=False)
    words = np.fromfile(path, np.uint8, offset=hdr.data_offset)[:160_000].view("<u4")
    ref = decode_evt2(words, policy)
    out = np.empty(len(ref) + 16, EVENT_DTYPE)
    st = K.new_state(640, 480, K.POLICY_MONOTONIC if policy == "monotonic" else K.POLICY_SPEC)
    pos, n, status = K.evt2_decode(words, 0, out, 0, st)
    assert (pos, status) == (len(words), K.STATUS_DONE)
    assert_same(out[:n], ref)


@pytest.mark.parametrize("policy", ["monotonic", "spec"])
@pytest.mark.parametrize("seed,cap", [(0, 1), (1, 7), (2, 1000)])
def test_kernel_resumes_like_naive_twin_on_random_streams(seed, cap, policy):
    """Random valid streams (steps back, 2^28 TIME_HIGH wraps, triggers, fillers) decoded into
    tiny outputs and word slices, so the fast run stops and resumes everywhere: the one-pass twin."""
    rng = np.random.default_rng(seed)
    words = random_evt2_words(rng, 6000)
    ref = decode_evt2(words, policy)
    st = K.new_state(2048, 2048, K.POLICY_MONOTONIC if policy == "monotonic" else K.POLICY_SPEC)
    parts, start = [], 0
    for stop in sorted(rng.integers(0, len(words), 20).tolist()) + [len(words)]:
        piece, pos = words[start:stop], 0
        while True:
            out = np.empty(cap, EVENT_DTYPE)
            pos, n, status = K.evt2_decode(piece, pos, out, 0, st)
            parts.append(out[:n].copy())
            assert status in (K.STATUS_DONE, K.STATUS_FULL)
            if status == K.STATUS_DONE:
                break
        start = stop
    assert len(ref) > 3000 and int(st[K.ST_LOOPS]) >= 1 and int(st[K.ST_BACKWARDS]) > 0
    assert_same(np.concatenate(parts), ref)


@pytest.mark.parametrize("policy", ["monotonic", "spec", "strict"])
@pytest.mark.parametrize("rel", sorted(FILES))
def test_whole_file_read_equals_iteration(shared, rel, policy):
    """read_all (mapped file, one kernel call) gives the bytes and counters of chunked iteration."""
    with open_recording(shared(rel), time_policy=policy) as rec:
        whole = rec.read_all()
        stats = rec.stats
    assert len(whole) == FILES[rel]
    with open_recording(shared(rel), time_policy=policy, chunk_events=50_000) as rec:
        parts = [c.copy() for c in rec]
        assert rec.stats == stats
    assert np.concatenate(parts).tobytes() == whole.tobytes()


def th(v):
    return (8 << 28) | v


def test_34bit_wrap_and_backwards_steps(tmp_path):
    top = (1 << 28) - 1
    words = [evt2_cd(1, 0, 0, 1),                  # before any TIME_HIGH: skipped
             th(top), evt2_cd(63, 1, 2, 1),         # t = 2^34 - 1
             th(0), evt2_cd(5, 2, 3, 0),            # wrap: 2^34 + 5
             th(0), evt2_cd(4, 3, 4, 0),            # a step back inside the same TIME_HIGH
             th(10), evt2_cd(0, 4, 5, 1)]
    path = evt2_file(tmp_path / "wrap.raw", words)
    spec = read_recording(path, time_policy="spec")[0]
    w = 1 << 34
    assert spec["t"].tolist() == [w - 1, w + 5, w + 4, w + 640]
    assert spec["x"].tolist() == [1, 2, 3, 4] and spec["p"].tolist() == [1, 0, 0, 1]
    with open_recording(path) as rec:
        assert rec.read_all()["t"].tolist() == [w - 1, w + 5, w + 5, w + 640]
        assert rec.stats == {"wraps": 1, "skipped_words": 1, "triggers": 0, "backwards_events": 1}
    assert_same(decode_evt2(np.array(words, np.uint32), "spec"), spec)
    hdr_len = len(header("evt 2.0", "geometry 64x48"))
    with pytest.raises(RecordingError, match=rf"wrap.raw at byte {hdr_len + 24}: timestamp goes backwards"):
        read_recording(path, time_policy="strict")
    # a TIME_HIGH drop of less than half the range is a step back, not a wrap
    small = evt2_file(tmp_path / "small.raw", [th(1000), evt2_cd(0, 0, 0, 0), th(900), evt2_cd(0, 1, 0, 0)])
    assert read_recording(small, time_policy="spec")[0]["t"].tolist() == [64000, 57600]


def test_triggers_and_others_are_skipped(tmp_path):
    words = [th(1), (0xA << 28) | 1, (0xE << 28) | 5, (0xF << 28) | 9, evt2_cd(2, 7, 8, 1)]
    with open_recording(evt2_file(tmp_path / "trig.raw", words)) as rec:
        ev = rec.read_all()
        assert rec.stats["triggers"] == 1
    assert ev["t"].tolist() == [66] and ev["x"].tolist() == [7] and ev["y"].tolist() == [8]


@pytest.mark.parametrize("words,match,offset", [
    ([th(0), evt2_cd(0, 64, 0, 0)], r"event x=64 is outside the sensor \(expected x < width 64\)", 4),
    ([th(0), evt2_cd(0, 0, 48, 1)], r"event y=48 is outside the sensor \(expected y < height 48\)", 4),
    ([th(0), 0x3 << 28], r"unknown EVT 2.0 event type 0x3 \(expected one of 0 CD_OFF", 4),
])
def test_impossible_words_raise_with_offset(tmp_path, words, match, offset):
    p = evt2_file(tmp_path / "bad.raw", words)
    hdr_len = len(header("evt 2.0", "geometry 64x48"))
    with pytest.raises(RecordingError, match=rf"bad.raw at byte {hdr_len + offset}: {match}"):
        read_recording(p)


def test_truncated_and_mislabelled(shared, tmp_path):
    data = shared("recordings/faery-testdata/evt2.raw").read_bytes()
    p = tmp_path / "t.raw"
    p.write_bytes(data[:166 + 4 * 1000 + 3])
    with pytest.raises(RecordingError, match=r"t.raw at byte 4166: truncated data: 3 trailing byte\(s\)"):
        read_recording(p)
    p.write_bytes(data[:166 + 4 * 1000])
    assert len(read_recording(p)[0]) > 900
    v3 = evt2_file(tmp_path / "v3.raw", [th(0)], lines=("evt 3.0", "geometry 64x48"))
    with pytest.raises(RecordingError, match="header says EVT 3.0; expected EVT 2.0"):
        read_recording(v3, format="evt2")
    nosize = evt2_file(tmp_path / "ns.raw", [th(0)], lines=("evt 2.0",))
    with pytest.raises(RecordingError, match="ns.raw at byte 0: cannot determine the sensor size"):
        read_recording(nosize)
    assert read_recording(nosize, sensor_size=(4, 4))[1].sensor_size == SensorSize(4, 4, 2)


@pytest.mark.parametrize("rel,seed,fmt", [("recordings/faery-testdata/evt2.raw", 3, None),
                                      ("recordings/expelliarmus-samples/evt2_sample.raw", 4, "evt2")])
def test_fuzz_real_heads(shared, tmp_path, rel, seed, fmt):
    counts = fuzz_reader(shared(rel), tmp_path, format=fmt, n_mutants=1000, seed=seed, head_bytes=1 << 13)
    assert counts["ok"] + counts["error"] == 1000 and counts["ok"] >= 10 and counts["error"] >= 50


def test_fuzz_whole_file_path(shared, tmp_path):
    """read_recording decodes the memory-mapped file in one pass (not the chunk loop): mutants too."""
    data = shared("recordings/faery-testdata/evt2.raw").read_bytes()[:1 << 13]
    rng = np.random.default_rng(12)
    target = tmp_path / "m.raw"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        target.write_bytes(mutate(data, rng))
        try:
            read_recording(target, format="evt2")
            outcomes["ok"] += 1
        except RecordingError:
            outcomes["error"] += 1
    assert outcomes["ok"] >= 5 and outcomes["error"] >= 20
