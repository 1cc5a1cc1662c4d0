"""Event Camera Dataset ``events.txt``: exact decimal timestamps, streaming, sensor size sources.

No real ``events.txt`` is reachable (MANIFEST.md §4), so the real-data tests write real
recordings (N-MNIST, DVSGesture .bs2) as ECD-style text and compare against Python's
``Decimal`` parser (tests/naive_formats.py) and against the source arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import naive_formats as naive
from fuzzing import fuzz_reader
from spikeflow.drivers.formats import text_kernels as K
from spikeflow.drivers.formats.text import BLOCK_BYTES
from spikeflow.drivers.recording import detect_format, open_recording, open_writer, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import SensorSize, make_events


def _ecd_text(ev) -> str:
    """Event Camera Dataset style: 9 fractional digits, no header."""
    t = ev["t"]
    return "".join(f"{a // 1_000_000}.{a % 1_000_000:06d}000 {x} {y} {p}\n"
                   for a, x, y, p in zip(t.tolist(), ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist()))


def test_ecd_layout_with_calib_matches_source_and_decimal(shared, tmp_path):
    src, _ = read_recording(shared("recordings/slayer-nmnist/7.bs2"))
    seq = tmp_path / "shapes_like"
    seq.mkdir()
    (seq / "calib.txt").write_text("199.092366542 198.82882047 132.192071378 110.712660011 0 0 0 0 0\n")
    text = _ecd_text(src)
    (seq / "events.txt").write_text(text)
    ev, info = read_recording(seq / "events.txt")
    assert info.format == "text" and info.sensor_size == SensorSize(240, 180, 2)
    np.testing.assert_array_equal(ev, src)
    assert [tuple(r) for r in ev.tolist()] == naive.parse_text(text)


def test_sensor_size_needed_without_calib_or_header(tmp_path):
    p = tmp_path / "events.txt"
    p.write_text("0.000001 1 2 1\n")
    with pytest.raises(RecordingError, match="sensor size unknown"):
        read_recording(p)
    ev, info = read_recording(p, sensor_size="240x180")
    assert info.sensor_size == (240, 180, 2) and ev["t"].tolist() == [1]


@pytest.mark.parametrize("first", ["240 180\n", "# sensor_size 240 180\n", "# sensor_size: 240x180x2\n"])
def test_header_lines(tmp_path, first):
    p = tmp_path / "e.txt"
    p.write_text(first + "1.000001 3 4 0\n")
    ev, info = read_recording(p)
    assert info.sensor_size == (240, 180, 2)
    assert ev.tolist() == [(1_000_001, 3, 4, 0)]


def test_exact_microseconds_no_float_error(tmp_path):
    # floats would give 0.000001*... rounding errors at large t; decimals do not
    lines = ["# sensor_size 10 10", "1234567.890123 1 1 1", "1234567.890124 2 2 0",
             "9999999.999999000 3 3 1", "0.000001 4 4 -1", ""]
    p = tmp_path / "e.txt"
    p.write_text("\n".join(lines))
    ev, _ = read_recording(p, check_order=False)
    assert ev["t"].tolist() == [1_234_567_890_123, 1_234_567_890_124, 9_999_999_999_999, 1]
    assert ev["p"].tolist() == [1, 0, 1, 0]


def test_sub_microsecond_digit_is_an_error_with_offset_and_line(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("# sensor_size 10 10\n0.1 1 1 1\n0.0000015 1 1 1\n")
    with pytest.raises(RecordingError, match=r"e\.txt at byte 38: line 3: timestamp finer than 1 us"):
        read_recording(p)


@pytest.mark.parametrize("line,msg", [("0.1 1 1", "expected 4 fields"), ("0.1 1 1 1 5", "more than 4"),
                                      ("0.1 1a 1 1", "not a number"), ("0.1 1 1 2", "polarity"),
                                      ("0.1 99999 1 1", "out of range"), ("0.1 20 1 1", "outside the 10x10")])
def test_bad_lines(tmp_path, line, msg):
    p = tmp_path / "e.txt"
    p.write_text("# sensor_size 10 10\n0.0 1 1 1\n" + line + "\n")
    with pytest.raises(RecordingError, match=msg) as e:
        read_recording(p)
    line_start = len("# sensor_size 10 10\n0.0 1 1 1\n")
    assert line_start <= e.value.offset <= line_start + len(line)  # the byte offset points into line 3


def test_backwards_time_is_refused_unless_allowed(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("# sensor_size 10 10\n0.2 1 1 1\n0.1 1 1 1\n")
    with pytest.raises(RecordingError, match=r"at byte 30: timestamp goes backwards"):
        read_recording(p)
    assert read_recording(p, check_order=False)[0]["t"].tolist() == [200_000, 100_000]


def test_other_units_and_column_orders(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("# sensor_size 10 10\n3,4,1500,1\n5,6,2500,0\n")
    ev, _ = read_recording(p, columns="xytp", t_unit="us")
    assert ev.tolist() == [(1500, 3, 4, 1), (2500, 5, 6, 0)]
    ev, _ = read_recording(p, columns="xytp", t_unit="ms")
    assert ev["t"].tolist() == [1_500_000, 2_500_000]
    with pytest.raises(RecordingError, match="permutation"):
        read_recording(p, columns="xyzp")


def test_streaming_across_blocks_and_chunks(tmp_path):
    rng = np.random.default_rng(3)
    n = BLOCK_BYTES // 20 + 5000  # more than one 4 MiB block
    ev = make_events(np.sort(rng.integers(0, 10**9, n)), rng.integers(0, 240, n), rng.integers(0, 180, n),
                     rng.integers(0, 2, n))
    p = tmp_path / "big.txt"
    with open_writer(p, (240, 180)) as w:
        w.write(ev)
    assert p.stat().st_size > BLOCK_BYTES
    with open_recording(p, chunk_events=50_000) as rec:
        chunks = list(rec)
    assert len(chunks) > 2 and max(map(len, chunks)) <= 50_000
    np.testing.assert_array_equal(np.concatenate(chunks), ev)


def test_writer_output_matches_naive_formatter(tmp_path):
    ev = make_events([-1, 0, 999_999, 1_000_000, 123_456_789_012], [0, 1, 2, 3, 239], [0, 1, 2, 3, 179],
                     [0, 1, 1, 0, 1])
    p = tmp_path / "o.txt"
    with open_writer(p, (240, 180)) as w:
        w.write(ev)
    lines = p.read_text().split("\n", 1)
    assert lines[0] == "# sensor_size 240 180 2"
    assert lines[1] == naive.format_text(ev["t"], ev["x"], ev["y"], ev["p"])
    np.testing.assert_array_equal(read_recording(p, check_order=False)[0], ev)


@pytest.mark.parametrize("seed", range(8))
def test_kernels_match_naive(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    t = rng.integers(-10**12, 10**12, n)
    x, y, p = rng.integers(0, 32767, n), rng.integers(0, 32767, n), rng.integers(0, 2, n)
    out = np.empty(64 * n, np.uint8)
    m = K.format_lines(t, x.astype(np.int16), y.astype(np.int16), p.astype(np.int16), out)
    text = out[:m].tobytes().decode()
    assert text == naive.format_text(t, x, y, p)
    buf = np.frombuffer(text.encode(), np.uint8)
    tt, xx, yy, pp = (np.empty(n, np.int64), np.empty(n, np.int16), np.empty(n, np.int16), np.empty(n, np.int16))
    k, pos, code = K.parse_lines(buf, np.arange(4), 6, tt, xx, yy, pp)
    assert (k, pos, code) == (n, -1, K.OK)
    assert list(zip(tt.tolist(), xx.tolist(), yy.tolist(), pp.tolist())) == naive.parse_text(text)


def test_detection_by_content(tmp_path):
    p = tmp_path / "events.dat"  # extension says DAT, content is text
    p.write_text("# sensor_size 10 10\n0.1 1 1 1\n")
    assert detect_format(p) == "text"
    q = tmp_path / "notes.txt"
    q.write_text("hello world\n")
    with pytest.raises(RecordingError, match="unknown recording format"):
        detect_format(q)


def test_fuzz_text(shared, tmp_path):
    src, _ = read_recording(shared("recordings/tonic-testdata/sample_nmnist.bin"))
    real = tmp_path / "src.txt"
    with open_writer(real, (34, 34)) as w:
        w.write(src[:1500])
    fz = tmp_path / "fz"
    fz.mkdir()
    counts = fuzz_reader(real, fz, format="text", n_mutants=1000)
    assert counts["ok"] > 0 and counts["error"] > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.tuples(st.integers(-10**15, 10**15), st.integers(0, 239), st.integers(0, 179),
                               st.integers(0, 1)), max_size=300),
       chunk=st.integers(1, 64))
def test_any_events_round_trip_through_text(tmp_path_factory, data, chunk):
    ev = make_events(*zip(*data)) if data else make_events([], [], [], [])
    path = tmp_path_factory.mktemp("t") / "e.txt"
    with open_writer(path, (240, 180)) as w:
        w.write(ev)
    with open_recording(path, check_order=False, chunk_events=chunk) as rec:
        back = rec.read_all()
    assert back.tobytes() == ev.tobytes()
