"""EVT 3.0 reader and writer: real files against deliberately chosen oracles, time policies,
wraps, chunking, the interchange writer, bad input and fuzzing. Also the shared '%' header."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import fuzz_reader, mutate
from naive_prophesee import decode_evt3, encode_evt3_plain, evt3_file, header, max_events_evt3, random_evt3_words

from spikeflow.drivers.formats import prophesee_kernels as K
from spikeflow.drivers.formats.evt3 import SAMPLE_STRIPES, SAMPLE_WORDS, Evt3Writer
from spikeflow.drivers.formats.prophesee_header import HEAD_BYTES, parse_header, sensor_size_from_header
from spikeflow.drivers.recording import detect_format, open_recording, open_writer, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, is_sorted, make_events

EVT3 = "recordings/faery-testdata/evt3.raw"
SAMPLE = "recordings/expelliarmus-samples/evt3_sample.raw"
SAMPLE_NPY = "recordings/expelliarmus-samples/evt3_sample.npy"
DAT = "recordings/faery-testdata/gen4.dat"
DAT_OFFSET_US = 11_194_368  # MANIFEST: t(dat) = t(evt3) - 11,194,368 us for every event


def evt3_package(path) -> np.ndarray:
    import evt3
    e = evt3.decode_file(str(path))
    return make_events(e.timestamp.astype(np.int64), e.x, e.y, e.polarity)


def faery_events(path) -> np.ndarray:
    import faery
    parts = list(faery.events_stream_from_file(str(path)))
    raw = np.concatenate(parts)
    return make_events(raw["t"].astype(np.int64), raw["x"], raw["y"], raw["on"].astype(np.int16))


def assert_same(a, b, fields="txyp"):
    assert len(a) == len(b)
    for f in fields:
        np.testing.assert_array_equal(a[f].astype(np.int64), b[f].astype(np.int64), err_msg=f"field {f}")


# -- real files against oracles ---------------------------------------------------------------

def test_evt3_matches_evt3_package_and_faery(shared):
    """Timestamp oracle: the `evt3` package (matches a spec decoder, MANIFEST). faery agrees too.
    The file has no backwards TIME_LOW, so both time policies give the same array."""
    path = shared(EVT3)
    ev, info = read_recording(path)
    assert info.format == "evt3" and detect_format(path) == "evt3"
    assert info.sensor_size == SensorSize(1280, 720, 2)
    assert info.extra["sensor_size_source"] == "geometry"
    assert len(ev) == 1_218_618
    assert (int(ev["t"][0]), int(ev["t"][-1])) == (11_200_224, 21_968_221)  # crosses the 2^24 wrap
    assert_same(ev, evt3_package(path))
    assert_same(ev, faery_events(path))
    spec, _ = read_recording(path, time_policy="spec")
    assert_same(spec, ev)


def test_evt3_xyp_match_expelliarmus_but_not_its_timestamps(shared):
    """expelliarmus 1.1.12 counts repeated TIME_HIGH words instead of using their payload, so its
    t drifts by multiples of 4096 us (MANIFEST): it is an oracle for x, y, p only."""
    import expelliarmus
    path = shared(EVT3)
    ev, _ = read_recording(path)
    ref = expelliarmus.Wizard(encoding="evt3", fpath=path).read()
    assert_same(ev, ref, fields="xyp")
    dt = ref["t"].astype(np.int64) - ev["t"]
    assert dt.max() > 0 and np.all(dt % 4096 == 0)  # the documented failure mode, not ours
    npy = np.load(shared(SAMPLE_NPY))
    sample, _ = read_recording(shared(SAMPLE))
    assert_same(sample, npy, fields="xyp")


def test_evt3_equals_dat_twin_up_to_the_time_offset(shared):
    ev3, _ = read_recording(shared(EVT3))
    dat, info = read_recording(shared(DAT))
    assert info.format == "dat"
    assert_same(dat, make_events(ev3["t"] - DAT_OFFSET_US, ev3["x"], ev3["y"], ev3["p"]))


def test_backwards_time_low_policies_on_evt3_sample(shared):
    """evt3_sample.raw has back-to-back TIME_LOW words stepping back (TIME_HIGH 2861, TIME_LOW
    811, TIME_LOW 800 at data word 28317; then 801, 802, ...). The 811 carries no event.

    'spec' keeps the raw value: equal to the evt3 package. The events themselves never go
    backwards here, so 'monotonic' (clamp each event to the latest earlier *event* time) changes
    nothing and equals 'spec'. faery clamps to the latest *time word* instead, so it moves the
    1,455 events between those words and the return past 811 later by 1..11 us (MANIFEST's count).
    """
    path = shared(SAMPLE)
    spec, info = read_recording(path, time_policy="spec")
    mono, _ = read_recording(path)  # default
    assert info.sensor_size == SensorSize(1280, 720, 2)  # from plugin_name hal_plugin_gen41_evk3
    assert "gen41" in info.extra["sensor_size_source"]
    assert len(spec) == len(mono) == 219_596
    assert_same(spec, evt3_package(path))
    assert_same(mono, spec)
    assert is_sorted(mono)
    fa = faery_events(path)
    assert_same(fa, mono, fields="xyp")
    late = fa["t"] - mono["t"]
    assert int((late != 0).sum()) == 1_455
    assert late.min() == 0 and late[late > 0].min() == 1 and late.max() == 11
    # each shifted event takes the time of a bare TIME_LOW directly followed by a lower TIME_LOW
    hdr = parse_header(path.read_bytes()[:4096], at_eof=False)
    w = np.fromfile(path, np.uint8, offset=hdr.data_offset).view("<u2").astype(np.int64)
    typ, val = w >> 12, w & 0xFFF
    last_th = np.maximum.accumulate(np.where(typ == 8, np.arange(len(w)), 0))
    full = (val[last_th] << 12) + val  # no 24-bit wrap inside this 8.8 ms file
    bare = (typ[:-1] == 6) & (typ[1:] == 6) & (val[1:] < val[:-1])
    assert bare[28317 - 1] and set(np.unique(fa["t"][late > 0])) <= set(full[:-1][bare])
    with open_recording(path) as rec:
        n = sum(len(c) for c in rec)
        assert rec.stats["backwards_events"] == 0 and n == len(mono)


def test_backwards_events_policies(tmp_path):
    """Events whose own time steps back: 'monotonic' clamps them, 'spec' keeps them, 'strict' raises."""
    words = [0x8000 | 1, 0x6000 | 500, 0x0001, 0x2000 | 3, 0x6000 | 400, 0x2000 | 4, 0x3000 | 8, 0x4000 | 0x3,
             0x6000 | 600, 0x2000 | 5]
    path = evt3_file(tmp_path / "back.raw", words)
    t = 1 << 12
    assert read_recording(path, time_policy="spec")[0]["t"].tolist() == [t + 500, t + 400, t + 400, t + 400, t + 600]
    with open_recording(path) as rec:
        assert rec.read_all()["t"].tolist() == [t + 500] * 4 + [t + 600]
        assert rec.stats["backwards_events"] == 3
    hdr_len = len(header("evt 3.0", "geometry 64x48"))
    with pytest.raises(RecordingError, match=rf"back.raw at byte {hdr_len + 10}: timestamp goes backwards to {t + 400} us"):
        read_recording(path, time_policy="strict")


@pytest.mark.parametrize("chunk_events,read_bytes", [(1, 6), (7, 1000), (4096, 4097), (1 << 20, None)])
def test_chunks_are_bounded_and_state_carries_across_reads(shared, chunk_events, read_bytes):
    path = shared(SAMPLE)
    whole, _ = read_recording(path, time_policy="spec")
    if chunk_events < 100:  # keep the tiny-buffer cases fast: the first 3000 events suffice
        whole = whole[:3000]
    parts = []
    with open_recording(path, chunk_events=chunk_events, read_bytes=read_bytes, time_policy="spec") as rec:
        for c in rec:
            assert 0 < len(c) <= chunk_events and c.dtype == EVENT_DTYPE
            parts.append(c.copy())
            if sum(map(len, parts)) >= len(whole):
                break
    got = np.concatenate(parts)[:len(whole)]
    assert_same(got, whole)


# -- kernel against its naive twin ------------------------------------------------------------

@pytest.mark.parametrize("policy", ["monotonic", "spec"])
@pytest.mark.parametrize("rel", [SAMPLE, EVT3])
def test_kernel_matches_naive_twin(shared, rel, policy):
    path = shared(rel)
    hdr = parse_header(path.read_bytes()[:4096], at_eof=False)
    words = np.fromfile(path, np.uint8, offset=hdr.data_offset)[: 80_000].view("<u2")
    ref = decode_evt3(words, policy)
    out = np.empty(len(ref) + 16, EVENT_DTYPE)
    st = K.new_state(1280, 720, K.POLICY_MONOTONIC if policy == "monotonic" else K.POLICY_SPEC)
    pos, n, status = K.evt3_decode(words, 0, out, 0, st)
    assert (pos, status) == (len(words), K.STATUS_DONE)
    assert_same(out[:n], ref)


@pytest.mark.parametrize("policy", ["monotonic", "spec"])
@pytest.mark.parametrize("seed,cap", [(0, 12), (1, 13), (2, 1000), (3, 29)])
def test_kernel_resumes_like_naive_twin_on_random_streams(seed, cap, policy):
    """Random valid streams, decoded into tiny output buffers and word slices so that every
    state variable crosses call boundaries, equal the one-pass twin."""
    rng = np.random.default_rng(seed)
    words = random_evt3_words(rng, 4000)
    ref = decode_evt3(words, policy)
    st = K.new_state(2048, 2048, K.POLICY_MONOTONIC if policy == "monotonic" else K.POLICY_SPEC)
    parts, start = [], 0
    for stop in sorted(rng.integers(0, len(words), 20).tolist()) + [len(words)]:
        piece, pos = words[start:stop], 0
        while True:
            out = np.empty(cap, EVENT_DTYPE)
            pos, n, status = K.evt3_decode(piece, pos, out, 0, st)
            parts.append(out[:n].copy())
            assert status in (K.STATUS_DONE, K.STATUS_FULL)
            if status == K.STATUS_DONE:
                break
        start = stop
    got = np.concatenate(parts)
    assert len(ref) > 1000
    assert_same(got, ref)
    small = np.empty(11, EVENT_DTYPE)
    assert K.evt3_decode(words, 0, small, 0, K.new_state(8, 8, 0))[2] == K.ERR_SMALL_OUT


def test_dense_vectors_outgrow_the_first_output_guess(tmp_path):
    """12 events per 2 words: read_recording's output (sized by the word count) must grow."""
    words = [0x8000 | 5]
    for row in range(40):
        words += [0x6000 | row, row, 0x3000 | (row % 2) << 11 | 4, 0x4FFF, 0x4FFF, 0x5FFF & 0x50FF]
    path = evt3_file(tmp_path / "dense.raw", words)
    ev, _ = read_recording(path)
    assert len(ev) == 40 * 32 and len(ev) > len(words)
    assert_same(ev, decode_evt3(np.array(words, np.uint16)))
    assert ev["x"][:32].tolist() == list(range(4, 36))


@pytest.mark.parametrize("policy", ["monotonic", "spec", "strict"])
@pytest.mark.parametrize("rel", [EVT3, SAMPLE])
def test_whole_file_read_equals_iteration(shared, rel, policy):
    """read_all (mapped file, one kernel call, sized by a sampled guess) gives the bytes and the
    counters of chunked iteration. evt3.raw's data starts at an odd byte: unaligned words."""
    path = shared(rel)
    with open_recording(path, time_policy=policy) as rec:
        whole = rec.read_all()
        stats = rec.stats
    with open_recording(path, time_policy=policy, chunk_events=100_000) as rec:
        parts = [c.copy() for c in rec]
        assert rec.stats == stats
    assert np.concatenate(parts).tobytes() == whole.tobytes()
    if rel == EVT3:
        assert rec.info.extra["data_offset"] % 2 == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_max_events_kernel_matches_naive_twin(shared, seed):
    """The output-size sample counter on random words (every value) and on stripes of a real file."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << 16, 5000).astype("<u2")
    starts = np.array([-3, 0, 17, 4990, 1200])
    assert K.evt3_max_events(words, starts, 64) == sum(max_events_evt3(words[max(s, 0):s + 64]) for s in starts)
    real = np.fromfile(shared(SAMPLE), np.uint8, offset=parse_header(shared(SAMPLE).read_bytes()[:4096]).data_offset)
    real = real.view("<u2")
    assert K.evt3_max_events(real, np.array([0, 1000, 9000]), 500) == sum(
        max_events_evt3(real[s:s + 500]) for s in (0, 1000, 9000))
    assert K.evt3_max_events(real, np.zeros(1, np.int64), len(real)) >= len(read_recording(shared(SAMPLE))[0])


def test_whole_file_read_without_mmap_uses_the_chunk_loop(shared, monkeypatch):
    """A file system that cannot map files (mmap raises ENODEV) still decodes, through the chunks."""
    import mmap as mmap_module

    from spikeflow.drivers.formats import prophesee_stream

    expected, _ = read_recording(shared(SAMPLE))

    def no_mmap(*args, **kwargs):
        raise OSError(19, "No such device")

    monkeypatch.setattr(prophesee_stream.mmap, "mmap", no_mmap)
    assert prophesee_stream.mmap is mmap_module
    assert read_recording(shared(SAMPLE))[0].tobytes() == expected.tobytes()


def test_output_guess_grows_when_dense_words_hide_between_sampled_stripes(tmp_path):
    """The sampled stripes see only filler words, the gaps hold VECT_12 words (6 events per
    word): read_all's first output is far too small and must grow, with the same result."""
    n = 4 * SAMPLE_STRIPES * SAMPLE_WORDS
    words = np.full(n, 0x7000, np.uint16)  # CONTINUED_4: no events
    starts = np.linspace(0, n - SAMPLE_WORDS, SAMPLE_STRIPES).astype(np.int64)
    in_stripe = np.zeros(n, bool)
    for s0 in starts:
        in_stripe[s0:s0 + SAMPLE_WORDS] = True
    gap = np.flatnonzero(~in_stripe[:-1] & ~in_stripe[1:])
    gap = gap[gap % 2 == 0]
    words[gap], words[gap + 1] = 0x3000, 0x4FFF  # VECT_BASE_X 0, then 12 events at x 0..11
    words[0] = 0x8000 | 7
    path = evt3_file(tmp_path / "hidden.raw", words)
    with open_recording(path) as rec:
        ev = rec.read_all()
        guess = rec._capacity_hint(n, words)
    assert len(ev) == 12 * len(gap) > 4 * guess
    assert_same(ev, decode_evt3(words))


def test_header_longer_than_the_first_read(tmp_path):
    """A header past read_header's first 64 KiB read, or ending right at its edge, is read in full."""
    for size in (HEAD_BYTES - 8, HEAD_BYTES + 100, 300_000):
        lines = ("evt 3.0", "comment ", "geometry 64x48", "end")
        lines = ("evt 3.0", "comment " + "x" * (size - len(header(*lines))), "geometry 64x48", "end")
        assert len(header(*lines)) == size
        p = evt3_file(tmp_path / f"long{size}.raw", [0x8000 | 2, 0x0005, 0x2007], lines=lines)
        ev, info = read_recording(p)
        assert info.sensor_size == SensorSize(64, 48, 2) and info.extra["data_offset"] == len(header(*lines))
        assert ev.tolist() == [(2 << 12, 7, 5, 0)]


# -- time wraps (synthetic) --------------------------------------------------------------------

def test_24bit_time_wrap_adds_2_pow_24(tmp_path):
    words = [0x8000 | 4094, 0x6000 | 5, 0x0003, 0x2000 | 7,          # t = 4094<<12 | 5
             0x8000 | 4095, 0x6000 | 4000, 0x2800 | 8,                # t = 4095<<12 | 4000
             0x8000 | 0, 0x6000 | 1, 0x2000 | 9,                      # wrapped: 2^24 + 1
             0x8000 | 1, 0x8000 | 4095, 0x2000 | 10]                  # 1 -> 4095 is a jump forward
    path = evt3_file(tmp_path / "wrap.raw", words)
    spec, _ = read_recording(path, time_policy="spec")
    t0 = (4094 << 12) + 5
    assert spec["t"].tolist() == [t0, (4095 << 12) + 4000, (1 << 24) + 1, (1 << 24) + (4095 << 12)]
    mono, _ = read_recording(path)
    assert mono["t"].tolist() == spec["t"].tolist()
    back = evt3_file(tmp_path / "back.raw", [0x8000 | 100, 0x2000 | 1, 0x8000 | 50, 0x2000 | 2])
    assert read_recording(back, time_policy="spec")[0]["t"].tolist() == [100 << 12, 50 << 12]
    assert read_recording(back)[0]["t"].tolist() == [100 << 12, 100 << 12]


def test_words_before_first_time_high_are_skipped(tmp_path):
    path = evt3_file(tmp_path / "pre.raw", [0x0001, 0x2002, 0x8000 | 3, 0x2004])
    with open_recording(path) as rec:
        ev = rec.read_all()
        assert rec.stats["skipped_words"] == 2
    assert ev["x"].tolist() == [4] and ev["t"].tolist() == [3 << 12]


# -- writer --------------------------------------------------------------------------------------

def test_writer_round_trips_real_events_bit_exactly(shared, tmp_path):
    ev, info = read_recording(shared(EVT3))
    out = tmp_path / "copy.raw"
    with open_writer(out, info.sensor_size) as w:
        assert isinstance(w, Evt3Writer)
        for i in range(0, len(ev), 300_000):
            w.write(ev[i:i + 300_000])
    back, info2 = read_recording(out)
    assert info2.format == "evt3" and info2.sensor_size == info.sensor_size
    assert back.tobytes() == ev.tobytes()
    assert_same(evt3_package(out), ev)  # independent decoder
    assert_same(faery_events(out), ev)
    assert out.stat().st_size < shared(EVT3).stat().st_size  # vectors + no filler words


def test_writer_round_trips_other_formats(shared, tmp_path):
    for rel in ("recordings/faery-testdata/evt2.raw", SAMPLE):
        ev, info = read_recording(shared(rel))
        out = tmp_path / "x.raw"
        with open_writer(out, info.sensor_size, format="evt3") as w:
            w.write(ev)
        assert read_recording(out)[0].tobytes() == ev.tobytes()
        assert_same(evt3_package(out), ev)


def test_writer_header_and_extra_lines(tmp_path):
    out = tmp_path / "h.raw"
    with Evt3Writer(out, (320, 240), extra={"camera": "sim", "seed": 7, "bad key": 1, "nested": {}}) as w:
        w.write(make_events([10, 20], [1, 2], [3, 4], [1, 0]))
    rec = open_recording(out)
    assert rec.info.sensor_size == SensorSize(320, 240, 2)
    assert rec.info.extra["header"]["camera"] == "sim" and rec.info.extra["header"]["seed"] == "7"
    assert "bad" not in rec.info.extra["header"] and "nested" not in rec.info.extra["header"]
    assert rec.read_all()["t"].tolist() == [10, 20]
    empty = tmp_path / "empty.raw"
    Evt3Writer(empty, (10, 10)).close()
    assert len(read_recording(empty)[0]) == 0


@pytest.mark.parametrize("events,match", [
    (make_events([5, 4], [0, 0], [0, 0], [0, 0]), "sorted"),
    (make_events([-1], [0], [0], [0]), ">= 0"),
    (make_events([1], [64], [0], [0]), r"x must be in \[0, 64\)"),
    (make_events([1], [0], [-1], [0]), r"y must be in \[0, 48\)"),
    (make_events([1], [0], [0], [2]), "p must be 0 or 1"),
    (make_events([1 << 32], [0], [0], [0]), "subtract a time offset"),
])
def test_writer_rejects_what_it_cannot_encode(tmp_path, events, match):
    with Evt3Writer(tmp_path / "bad.raw", (64, 48)) as w, pytest.raises(RecordingError, match=match):
        w.write(events)


def test_writer_rejects_unsorted_across_calls_and_huge_sensors(tmp_path):
    with Evt3Writer(tmp_path / "a.raw", (64, 48)) as w:
        w.write(make_events([100], [1], [1], [1]))
        with pytest.raises(RecordingError, match="event 1 .*sorted"):
            w.write(make_events([99], [1], [1], [1]))
    with pytest.raises(RecordingError, match="cannot encode sensor size 4096x10"):
        Evt3Writer(tmp_path / "b.raw", (4096, 10))


def test_writer_wraps_and_late_start_are_decoded_by_every_decoder(tmp_path):
    t = np.array([3 << 24, (3 << 24) + 1, (5 << 24) + 77, (5 << 24) + 77, (9 << 24) - 1], np.int64)
    ev = make_events(t, [1, 2, 3, 4, 5], [0, 0, 7, 7, 1], [1, 0, 1, 1, 0])
    out = tmp_path / "late.raw"
    with Evt3Writer(out, (16, 8)) as w:
        w.write(ev)
    assert read_recording(out)[0].tobytes() == ev.tobytes()
    assert_same(evt3_package(out), ev)


sizes = st.tuples(st.integers(1, 40), st.integers(1, 20))


@st.composite
def sorted_events(draw):
    w, h = draw(sizes)
    n = draw(st.integers(0, 300))
    dt = draw(st.lists(st.sampled_from([0, 0, 0, 1, 3, 4095, 4096, 5000, 1 << 20]), min_size=n, max_size=n))
    t0 = draw(st.integers(0, (1 << 25)))
    t = t0 + np.cumsum(np.array(dt, np.int64)) if n else np.zeros(0, np.int64)
    x = draw(st.lists(st.integers(0, w - 1), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, h - 1), min_size=n, max_size=n))
    p = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return (w, h), make_events(t, x, y, p)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=sorted_events())
def test_property_encode_decode_identity(tmp_path, data):
    (w, h), ev = data
    out = tmp_path / "prop.raw"
    with Evt3Writer(out, (w, h)) as wr:
        half = len(ev) // 2
        wr.write(ev[:half])
        wr.write(ev[half:])
    back, info = read_recording(out, time_policy="strict")
    assert info.sensor_size == SensorSize(w, h, 2)
    assert back.tobytes() == ev.tobytes()
    # the naive one-ADDR_X-per-event encoding decodes to the same events; "% end" closes the
    # header as Metavision writes it (without it, a first data byte of 0x25 '%' reads as header)
    plain = evt3_file(tmp_path / "plain.raw", encode_evt3_plain(ev),
                      lines=("evt 3.0", f"geometry {w}x{h}", "end"))
    assert read_recording(plain)[0].tobytes() == ev.tobytes()


# -- bad input -----------------------------------------------------------------------------------

def test_truncated_word_is_reported_with_offset(shared, tmp_path):
    data = shared(SAMPLE).read_bytes()[:5001]  # header 166 bytes + odd number of data bytes
    p = tmp_path / "trunc.raw"
    p.write_bytes(data)
    with pytest.raises(RecordingError, match=r"trunc.raw at byte 5000: truncated data: 1 trailing byte"):
        read_recording(p)


@pytest.mark.parametrize("words,match,offset", [
    ([0x8000, 0x0001, 0x2000 | 64], r"x=64 is outside the sensor \(expected x < width 64\)", 4),
    ([0x8000, 0x0030], r"y=48 is outside the sensor", 2),
    ([0x8000, 0x3000 | 60, 0x4000 | 0x010], r"x=64 is outside", 4),
    ([0x8000, 0x9123], r"unknown EVT 3.0 word type 0x9 \(expected one of 0 ADDR_Y", 2),
])
def test_impossible_words_raise_with_offset(tmp_path, words, match, offset):
    p = evt3_file(tmp_path / "bad.raw", words)
    hdr_len = len(header("evt 3.0", "geometry 64x48"))
    with pytest.raises(RecordingError, match=rf"bad.raw at byte {hdr_len + offset}: (event )?{match}"):
        read_recording(p)


@pytest.mark.parametrize("lines,match", [
    (("evt 3.0", "geometry 12ax720"), "geometry must be WIDTHxHEIGHT"),
    (("evt 3.0", "format EVT2"), "two encodings"),
    (("evt 9.9",), "unknown EVT version"),
    (("evt 3.0", "format EVT3;width=640"), "only one of width/height"),
    (("evt 3.0", "geometry 640x480", "format EVT3;height=720;width=1280"), "format says 1280x720 but geometry"),
])
def test_corrupt_headers_raise(tmp_path, lines, match):
    p = evt3_file(tmp_path / "h.raw", [0x8000], lines=lines)
    with pytest.raises(RecordingError, match=match):
        read_recording(p, format="evt3")


def test_sensor_size_needs_a_source(tmp_path):
    p = evt3_file(tmp_path / "nosize.raw", [0x8000, 0x0001, 0x2002], lines=("evt 3.0", "serial_number 1"))
    with pytest.raises(RecordingError, match="cannot determine the sensor size.*pass sensor_size="):
        read_recording(p)
    ev, info = read_recording(p, sensor_size=(8, 4))
    assert info.sensor_size == SensorSize(8, 4, 2) and info.extra["sensor_size_source"] == "argument"
    assert ev["x"].tolist() == [2]
    with pytest.raises(RecordingError, match="outside what this format can address"):
        read_recording(p, sensor_size=(5000, 4))


def test_header_parsing_rules():
    h = parse_header(header("date 2023", "format EVT3;height=720;width=1280", "end") + b"%\x00data")
    assert h.evt_version == "3.0" and (h.width, h.height, h.size_source) == (1280, 720, "format")
    assert h.data_offset == len(header("date 2023", "format EVT3;height=720;width=1280", "end"))
    h = parse_header(header("plugin_name hal_plugin_gen31_fx3", "evt 2.0"))
    assert sensor_size_from_header(h, "f")[0] == SensorSize(640, 480, 2)
    assert parse_header(b"\x00\x80").data_offset == 0  # headerless
    with pytest.raises(RecordingError, match="header line without end of line"):
        parse_header(b"% evt 3.0")
    with pytest.raises(RecordingError, match="Width must be a positive integer"):
        parse_header(header("Width 0"))


def test_wrong_magic_is_not_sniffed_and_wrong_version_is_rejected(tmp_path):
    p = tmp_path / "noise.raw"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RecordingError, match="unknown recording format"):
        open_recording(p)
    evt2 = evt3_file(tmp_path / "v2.raw", [0x8000], lines=("evt 2.0", "geometry 64x48"))
    assert detect_format(evt2) == "evt2"
    with pytest.raises(RecordingError, match="header says EVT 2.0; expected EVT 3.0"):
        open_recording(evt2, format="evt3")
    with pytest.raises(ValueError, match="time_policy must be one of"):
        open_recording(evt2, format="evt2", time_policy="latest")


@pytest.mark.parametrize("rel,seed,fmt", [(SAMPLE, 1, None), (EVT3, 2, "evt3")])
def test_fuzz_real_heads(shared, tmp_path, rel, seed, fmt):
    counts = fuzz_reader(shared(rel), tmp_path, format=fmt, n_mutants=1000, seed=seed, head_bytes=1 << 13)
    assert counts["ok"] + counts["error"] == 1000 and counts["ok"] >= 10 and counts["error"] >= 50


def test_fuzz_whole_file_path(shared, tmp_path):
    """read_recording decodes the memory-mapped file in one pass (not the chunk loop): mutants too."""
    data = shared(EVT3).read_bytes()[:1 << 13]
    rng = np.random.default_rng(11)
    target = tmp_path / "m.raw"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        target.write_bytes(mutate(data, rng))
        try:
            read_recording(target, format="evt3")
            outcomes["ok"] += 1
        except RecordingError:
            outcomes["error"] += 1
    assert outcomes["ok"] >= 5 and outcomes["error"] >= 20


def test_sniffing_by_format_line_alone(tmp_path):
    v3 = evt3_file(tmp_path / "a.bin", [0x8000, 0x0001, 0x2002], lines=("format EVT3;height=4;width=4",))
    v2 = evt3_file(tmp_path / "b.bin", [0x8000, 0x8000], lines=("format EVT2;height=4;width=4",))
    assert detect_format(v3) == "evt3" and detect_format(v2) == "evt2"  # not from the extension
    assert read_recording(v3)[0].tolist() == [(0, 2, 1, 0)]


def test_first_data_byte_percent_needs_the_end_line(tmp_path):
    """0x8025 (TIME_HIGH 37) starts with the byte '%': only "% end" tells it from a header line
    (Metavision writes it; so does our writer). Without it the reader reports a bad header."""
    ev = make_events([152824, 152830], [0, 1], [0, 0], [1, 0])
    words = encode_evt3_plain(ev)
    assert words.tobytes()[0:1] == b"%"
    ok = evt3_file(tmp_path / "ok.raw", words, lines=("evt 3.0", "geometry 2x1", "end"))
    assert read_recording(ok)[0].tobytes() == ev.tobytes()
    bad = evt3_file(tmp_path / "bad.raw", words, lines=("evt 3.0", "geometry 2x1"))
    with pytest.raises(RecordingError, match="bad.raw at byte 25"):
        read_recording(bad)
    with Evt3Writer(tmp_path / "ours.raw", (2, 1)) as w:
        w.write(ev)
    assert read_recording(tmp_path / "ours.raw")[0].tobytes() == ev.tobytes()
