"""tonic's preprocessed .npy samples: structured arrays in any field order/dtype and the (N, 4)
dataset layouts, checked against tonic's own conversion code on real recordings."""

from __future__ import annotations

import json
from pathlib import Path

import naive_formats as naive
import numpy as np
import numpy.lib.recfunctions as rfn
import pytest
import tonic
from fuzzing import fuzz_reader, mutate
from spikeflow.drivers.formats import npy_kernels
from spikeflow.drivers.formats.tonic_npy import MAP_BYTES, READ_BLOCK, _fast_header
from spikeflow.drivers.recording import (
    detect_format,
    open_recording,
    open_writer,
    read_recording,
)
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize


@pytest.fixture
def gesture(shared):
    ev, _ = read_recording(shared("recordings/slayer-dvsgesture/2.bs2"), dataset="dvsgesture")
    return ev


def _same(ours, ref):
    assert ours.dtype == EVENT_DTYPE and len(ours) == len(ref)
    for k in "txyp":
        np.testing.assert_array_equal(ours[k], ref[k].astype(np.int64), err_msg=k)


def test_expelliarmus_dump_structured_u1_polarity(shared):
    """A real structured .npy (t i8, x i2, y i2, p u1, padded to 16 bytes)."""
    path = shared("recordings/expelliarmus-samples/evt3_sample.npy")
    ref = np.load(path)
    ev, info = read_recording(path, sensor_size=(1280, 720))
    assert info.format == "tonic_npy" and info.sensor_size == (1280, 720, 2)
    assert len(ev) == 219_596
    _same(ev, ref)


def test_backward_timestamps_are_refused_by_default(shared, tmp_path):
    ref = np.load(shared("recordings/expelliarmus-samples/evt3_sample.npy"))
    ref["t"][1000] = ref["t"][999] - 1
    path = tmp_path / "back.npy"
    np.save(path, ref)
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        data_start = f.tell()
    with pytest.raises(RecordingError, match=rf"back\.npy at byte {data_start + 16 * 1000}: timestamp goes backwards"):
        read_recording(path, sensor_size=(1280, 720))
    ev, _ = read_recording(path, sensor_size=(1280, 720), check_order=False)
    _same(ev, ref)


def test_dvsgesture_layout_matches_tonic(gesture, tmp_path):
    """tonic's DVSGesture cache: float (N, 4) columns x, y, p, t[ms]; tonic scales t by 1000."""
    folder = tmp_path / "ibmGestureTrain" / "user01_fluorescent"
    folder.mkdir(parents=True)
    arr = np.stack([gesture["x"], gesture["y"], gesture["p"], gesture["t"] / 1000.0], axis=1)
    path = folder / "1.npy"
    np.save(path, arr)
    ev, info = read_recording(path)  # preset from tonic's folder name
    assert info.sensor_size == (128, 128, 2) and info.extra["dataset"] == "dvsgesture"
    ref = np.load(path)
    ref[:, 3] *= 1000  # exactly tonic.datasets.DVSGesture.__getitem__
    ref = rfn.unstructured_to_structured(ref, tonic.datasets.DVSGesture.dtype)
    assert len(ev) == len(gesture)
    for k in "xyp":
        np.testing.assert_array_equal(ev[k], ref[k].astype(np.int64))
    np.testing.assert_array_equal(ev["t"], np.rint(arr[:, 3] * 1000).astype(np.int64))
    np.testing.assert_array_equal(ev, gesture)  # ms floats hold us exactly after rounding


def test_pokerdvs_layout(gesture, tmp_path):
    arr = np.stack([gesture["t"], gesture["x"] % 35, gesture["y"] % 35, gesture["p"]], axis=1).astype(np.int64)
    path = tmp_path / "cl_0001.npy"
    np.save(path, arr)
    ev, info = read_recording(path, dataset="pokerdvs")
    ref = rfn.unstructured_to_structured(arr, tonic.datasets.POKERDVS.dtype)
    assert info.sensor_size == tonic.datasets.POKERDVS.sensor_size
    _same(ev, ref)


@pytest.mark.parametrize("dtype", [tonic.datasets.DVSLip.dtype, tonic.io.events_struct,
                                   np.dtype([("p", "i1"), ("t", "<u8"), ("y", ">i4"), ("x", "<f4")])])
def test_any_field_order_and_dtype(gesture, tmp_path, dtype):
    arr = np.empty(len(gesture), dtype)
    for k in "txyp":
        arr[k] = gesture[k]
    path = tmp_path / "s.npy"
    np.save(path, arr)
    ev, info = read_recording(path, sensor_size=(128, 128))
    np.testing.assert_array_equal(ev, gesture)
    assert info.extra["sensor_size_source"] == "option"


def test_sidecar_sensor_size_and_columns(gesture, tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, np.stack([gesture["t"], gesture["x"], gesture["y"], gesture["p"]], axis=1))
    with pytest.raises(RecordingError, match="pass dataset="):
        read_recording(path)
    (tmp_path / "s.json").write_text(json.dumps({"sensor_size": [128, 128, 2], "columns": "txyp"}))
    ev, info = read_recording(path)
    assert info.sensor_size == SensorSize(128, 128, 2) and info.extra["sensor_size_source"] == "sidecar"
    np.testing.assert_array_equal(ev, gesture)


def test_structured_without_sensor_size_is_refused(gesture, tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, gesture)
    with pytest.raises(RecordingError, match="sensor size unknown"):
        read_recording(path)


def test_writer_round_trip_streams_and_writes_sidecar(gesture, tmp_path):
    path = tmp_path / "out.npy"
    with open_writer(path, (128, 128)) as w:
        for i in range(0, len(gesture), 10_000):
            w.write(gesture[i:i + 10_000])
    assert json.loads((tmp_path / "out.npy.json").read_text())["sensor_size"] == [128, 128, 2]
    np.testing.assert_array_equal(np.load(path), gesture)  # a plain numpy file
    with open_recording(path, chunk_events=3000) as rec:
        assert rec.info.sensor_size == (128, 128, 2)
        np.testing.assert_array_equal(rec.read_all(), gesture)


def test_bad_files(gesture, tmp_path):
    obj = tmp_path / "o.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RecordingError, match="pickle"):
        read_recording(obj)
    good = tmp_path / "g.npy"
    np.save(good, gesture)
    data = good.read_bytes()
    cut = tmp_path / "cut.npy"
    cut.write_bytes(data[:-5])
    with pytest.raises(RecordingError, match=r"cut\.npy at byte \d+: data size mismatch"):
        read_recording(cut, sensor_size=(128, 128))
    hdr = tmp_path / "hdr.npy"
    hdr.write_bytes(data[:12] + b"garbage!" + data[20:])
    with pytest.raises(RecordingError, match=r"hdr\.npy at byte 6: corrupt \.npy header"):
        read_recording(hdr, sensor_size=(128, 128))
    frac = tmp_path / "f.npy"
    np.save(frac, np.array([[0.0, 1.5, 2.0, 1.0]]))
    with pytest.raises(RecordingError, match="non-integral"):
        read_recording(frac, dataset="dvsgesture")
    wide = tmp_path / "w.npy"
    np.save(wide, np.zeros((3, 5)))
    with pytest.raises(RecordingError, match=r"\(N, 4\)"):
        read_recording(wide)


def test_detected_by_magic_not_extension(gesture, tmp_path):
    path = tmp_path / "renamed.bin"
    np.save(tmp_path / "x.npy", gesture)
    path.write_bytes((tmp_path / "x.npy").read_bytes())
    assert detect_format(path) == "tonic_npy"


def test_fuzz_npy(gesture, tmp_path):
    src = tmp_path / "src.npy"
    with open_writer(src, (128, 128)) as w:
        w.write(gesture[:3000])
    fz = tmp_path / "fz"
    fz.mkdir()
    (fz / "mutant.npy.json").write_text(json.dumps({"sensor_size": [128, 128, 2]}))
    counts = fuzz_reader(src, fz, format="tonic_npy", n_mutants=1000)
    assert counts["ok"] > 0 and counts["error"] > 0


def test_fortran_order_columns(gesture, tmp_path):
    arr = np.asfortranarray(np.stack([gesture["x"], gesture["y"], gesture["p"], gesture["t"]], axis=1)
                            .astype(np.int64))
    path = tmp_path / "f.npy"
    np.save(path, arr)
    assert np.load(path).flags.f_contiguous
    ev, _ = read_recording(path, columns="xypt", sensor_size=(128, 128), chunk_events=10_000)
    np.testing.assert_array_equal(ev, gesture)
    arr[5000, 3] = arr[4999, 3] - 1  # t steps back at row 5000; t is column 3
    np.save(path, arr)
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        start = f.tell()
    with pytest.raises(RecordingError, match=rf"at byte {start + 8 * (3 * len(gesture) + 5000)}: timestamp"):
        read_recording(path, columns="xypt", sensor_size=(128, 128), chunk_events=10_000)


# ------------------------------------------------------------ the one-pass path (read_all and streaming)

EXPELLIARMUS = np.dtype({"names": ["t", "x", "y", "p"], "formats": ["<i8", "<i2", "<i2", "u1"],
                         "offsets": [0, 8, 10, 12], "itemsize": 16})


def _numpy_header(path):
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        return shape, fortran, dtype, f.tell()


@pytest.mark.parametrize("arr", [
    np.zeros(5, EVENT_DTYPE), np.zeros(7, EXPELLIARMUS), np.zeros(3, tonic.io.events_struct),
    np.zeros((4, 4), np.int64), np.asfortranarray(np.zeros((6, 4), np.float32)), np.zeros((0, 4), "<u2"),
    np.zeros(123_456_789 // 10**6, ">i4"), np.zeros((2, 3, 4), np.int8),
    np.zeros(2, [("t", "<u8"), ("x", "<f4"), ("y", "?"), ("p", "<i1"), ("", "V5")])])
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_fast_header_parser_agrees_with_numpy(tmp_path, arr, version):
    path = tmp_path / "h.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, arr, version=version)
    fast = _fast_header(path.read_bytes()[:4096])
    assert fast is not None  # the common headers never need numpy's slow parser
    assert fast == _numpy_header(path)


@pytest.mark.filterwarnings("ignore:Reading `.npy` or `.npz` file required additional header parsing")
@pytest.mark.parametrize("header", [
    "{'descr': '<i8', 'fortran_order': False, 'shape': (12), }",  # (12) is an int, not a tuple
    "{'fortran_order': False, 'descr': '<i8', 'shape': (12,), }",  # another key order
    "{'descr': [('t', '<i8', (2,))], 'fortran_order': False, 'shape': (1,), }",  # sub-array field
    "{'descr': '<i8', 'fortran_order': False, 'shape': (12L,), }",  # Python 2
    "{'descr': '<q8', 'fortran_order': False, 'shape': (1,), }",  # not a dtype
])
def test_fast_header_parser_leaves_the_rest_to_numpy(tmp_path, header):
    body = header.encode("latin1")
    body += b" " * (63 - (10 + len(body)) % 64) + b"\n"
    head = b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body
    assert _fast_header(head + b"\0" * 64) is None
    path = tmp_path / "odd.npy"
    path.write_bytes(head + b"\0" * 96)
    try:
        expected = str(_numpy_header(path))
    except Exception as e:  # noqa: BLE001 - whatever numpy says, we say it as a RecordingError
        expected = type(e).__name__
    with pytest.raises(RecordingError) as ei:
        read_recording(path, sensor_size=(8, 8), columns="txyp")
    if expected in ("ValueError", "SyntaxError", "TypeError"):
        assert "corrupt .npy header" in str(ei.value)


def _random_events(rng, n, width, height):
    t = np.cumsum(rng.integers(0, 3, n)) + int(rng.integers(-1000, 1000))
    return t, rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(-1, 2, n)


def _spoil(rng, t, x, y, p, width, height):
    """Make one random event bad (outside the sensor, backwards, or p beyond int16) or none."""
    n = len(t)
    i = int(rng.integers(1, n))
    kind = int(rng.integers(0, 5))
    if kind == 1:
        (x if rng.integers(0, 2) else y)[i] = -1 if rng.integers(0, 2) else (width if x is not y else height) + 3
    elif kind == 2:
        t[i:] -= 5
    elif kind == 3:
        p[i] = 40_000
    return kind


@pytest.mark.parametrize("field", ["x", "y"])
def test_kernels_refuse_negative_coordinates(field):
    """The bounds check is one unsigned compare: -1 must land outside, not wrap to a valid pixel."""
    src = np.zeros(5, [("t", "<i8"), ("x", "<i2"), ("y", "<i4"), ("p", "u1")])
    src["t"] = np.arange(5)
    src[field][3] = -1
    out = np.zeros(5, EVENT_DTYPE)
    assert npy_kernels.records_to_events_(src, out, 0, 10, 10, 0, True) == (3, npy_kernels.OUTSIDE)
    rows = np.stack([src["t"], src["x"], src["y"], src["p"]], axis=1).astype(np.int64)
    assert npy_kernels.rows_to_events_(rows, 0, 1, 2, 3, out, 0, 10, 10, 0, True) == (3, npy_kernels.OUTSIDE)
    ev = np.zeros(5, EVENT_DTYPE)
    ev[field][3] = -1
    assert npy_kernels.first_invalid_event(ev, 10, 10, 0, True) == (3, npy_kernels.OUTSIDE)


@pytest.mark.parametrize("seed", range(12))
def test_kernels_match_naive(seed):
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(1, 300)), int(rng.integers(1, 300))
    n = int(rng.integers(1, 400))
    t, x, y, p = _random_events(rng, n, width, height)
    if n > 1:
        _spoil(rng, t, x, y, p, width, height)
    check = bool(rng.integers(0, 2))
    last = int(t[0]) - int(rng.integers(-3, 3))
    dtype = np.dtype([("p", "<i4"), ("y", "<u2"), ("t", "<i8"), ("pad", "<f4"), ("x", "<i2")])
    src = np.zeros(n, dtype)
    for k, v in zip("txyp", (t, x, y, p)):
        src[k] = v
    good, want = naive.events_or_first_bad(src["t"].tolist(), src["x"].tolist(), src["y"].tolist(),
                                           src["p"].tolist(), width, height, last, check)
    out = np.zeros(n + 3, EVENT_DTYPE)
    assert npy_kernels.records_to_events_(src, out, 3, width, height, last, check) == want
    assert out[3:3 + len(good)].tolist() == good
    rows = np.stack([src["x"], src["p"], src["t"], src["y"]], axis=1).astype(np.int64)
    out[:] = 0
    assert npy_kernels.rows_to_events_(rows, 2, 0, 3, 1, out, 0, width, height, last, check) == want
    assert out[:len(good)].tolist() == good
    ev = np.zeros(n, EVENT_DTYPE)
    for k, v in zip("txyp", (t, x, y, p)):
        ev[k] = v.astype(np.int16) if k != "t" else v
    good, want = naive.events_or_first_bad(ev["t"].tolist(), ev["x"].tolist(), ev["y"].tolist(),
                                           [0] * n, width, height, last, check)
    assert npy_kernels.first_invalid_event(ev, width, height, last, check) == want


LAYOUTS = [  # (dtype or 2-D column order + dtype, expected mode)
    (EVENT_DTYPE, "same"), (EXPELLIARMUS, "records"), (tonic.io.events_struct, "records"),
    (tonic.datasets.DVSLip.dtype, "records"), (np.dtype([("t", "<u4"), ("x", "<u2"), ("y", "<i4"), ("p", "<i8")]), "records"),
    (np.dtype([("t", "<u8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i2")]), None),  # uint64 t: per-field path
    (np.dtype([("t", ">i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i2")]), None),  # big-endian field
    (np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i2"), ("w", "<f2")]), None),  # numba: no float16
    (np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i2"), ("a b", "<f8")]), "records"),
    (("txyp", "<i8"), "rows"), (("xypt", "<i4"), "rows"), (("ptyx", "<f8"), None),
]


def _write_layout(path, ev, layout):
    if isinstance(layout, tuple):
        cols, dt = layout
        arr = np.stack([ev[k] for k in cols], axis=1).astype(dt)
    else:
        arr = np.zeros(len(ev), layout)
        for k in "txyp":
            arr[k] = ev[k]
    np.save(path, arr)
    return {"columns": layout[0]} if isinstance(layout, tuple) else {}


@pytest.mark.parametrize("layout,mode", LAYOUTS)
def test_one_pass_path_equals_source_in_every_layout(gesture, tmp_path, layout, mode):
    assert len(gesture) > READ_BLOCK + 10_000  # several read blocks
    path = tmp_path / "l.npy"
    opts = _write_layout(path, gesture, layout)
    with open_recording(path, sensor_size=(128, 128), **opts) as rec:
        assert rec._mode == mode
        ev = rec.read_all()
    assert ev.dtype == EVENT_DTYPE and ev.flags.writeable
    np.testing.assert_array_equal(ev, gesture)
    with open_recording(path, sensor_size=(128, 128), chunk_events=7001, **opts) as rec:
        chunks = list(rec)
    assert max(map(len, chunks)) == 7001
    np.testing.assert_array_equal(np.concatenate(chunks), gesture)


@pytest.mark.parametrize("layout,mode", [x for x in LAYOUTS if x[1] is not None])
@pytest.mark.parametrize("where", [5, READ_BLOCK - 1, READ_BLOCK, READ_BLOCK + 777])
def test_one_pass_path_errors_name_the_byte(gesture, tmp_path, layout, mode, where):
    path = tmp_path / "e.npy"
    opts = _write_layout(path, gesture, layout)
    start = _numpy_header(path)[3]
    row = np.load(path, mmap_mode="r")[0].nbytes if not isinstance(layout, tuple) else 4 * np.dtype(layout[1]).itemsize
    bad = gesture.copy()
    bad["x"][where] = 200
    _write_layout(path, bad, layout)
    for chunk in (1 << 20, 10_000):
        with pytest.raises(RecordingError, match=rf"e\.npy at byte {start + row * where}: event \(200, \d+\) outside"):
            read_recording(path, sensor_size=(128, 128), chunk_events=chunk, **opts)
    bad = gesture.copy()
    bad["t"][where] = bad["t"][where - 1] - 1  # unsigned t layouts too
    _write_layout(path, bad, layout)
    with pytest.raises(RecordingError, match=rf"at byte {start + row * where}: timestamp goes backwards"):
        read_recording(path, sensor_size=(128, 128), **opts)
    np.testing.assert_array_equal(read_recording(path, sensor_size=(128, 128), check_order=False, **opts)[0], bad)


def test_polarity_beyond_int16_is_refused_by_the_per_field_check(gesture, tmp_path):
    arr = np.zeros(len(gesture), [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i4")])
    for k in "txyp":
        arr[k] = gesture[k]
    arr["p"][READ_BLOCK + 3] = 70_000
    path = tmp_path / "p.npy"
    np.save(path, arr)
    start = _numpy_header(path)[3]
    with pytest.raises(RecordingError, match=rf"at byte {start + 16 * (READ_BLOCK + 3)}: field p holds an out-of-range"):
        read_recording(path, sensor_size=(128, 128))


def test_fuzz_npy_read_all(gesture, tmp_path):
    """read_all (one pre-sized array, one-pass kernels) on mutants of two layouts: a result equal
    to streaming's, or a RecordingError; never another exception."""
    rng = np.random.default_rng(1)
    for layout in (EXPELLIARMUS, EVENT_DTYPE):
        src = tmp_path / "src.npy"
        _write_layout(src, gesture[:3000], layout)
        data = src.read_bytes()
        mutant = tmp_path / "m.npy"
        counts = {"ok": 0, "error": 0}
        for _ in range(300):
            mutant.write_bytes(mutate(data, rng))
            try:
                ev, _ = read_recording(mutant, sensor_size=(128, 128), columns="txyp")
            except RecordingError:
                counts["error"] += 1
                continue
            counts["ok"] += 1
            with open_recording(mutant, sensor_size=(128, 128), columns="txyp", chunk_events=999) as rec:
                np.testing.assert_array_equal(np.concatenate(list(rec) or [np.zeros(0, EVENT_DTYPE)]), ev)
        assert counts["ok"] > 0 and counts["error"] > 0, counts


@pytest.mark.parametrize("spelling", ["{d}/c.npy", "{d}//c.npy", "{d}/./c.npy", "{d}/sub/../c.npy"])
def test_path_spellings_give_the_same_info_path_as_pathlib(gesture, tmp_path, spelling):
    """Readers keep the str path and build ``Path`` lazily: ``info.path``, ``rec.path`` and
    error messages must still read exactly as ``str(Path(p))``."""
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "c.npy", gesture[:100])
    p = spelling.format(d=tmp_path)
    with open_recording(p, sensor_size=(128, 128)) as rec:
        assert rec.info.path == str(Path(p)) and rec.path == Path(p)
        np.testing.assert_array_equal(rec.read_all(), gesture[:100])
    with pytest.raises(RecordingError) as e:
        read_recording(p)  # no sensor size
    assert e.value.path == str(Path(p)) and str(e.value).startswith(str(Path(p)) + ": sensor size unknown")


def test_folder_preset_from_a_str_path(gesture, tmp_path):
    folder = tmp_path / "ibmGestureTest" / "user02"
    folder.mkdir(parents=True)
    arr = np.stack([gesture["x"], gesture["y"], gesture["p"], gesture["t"] // 1000], axis=1)[:500]
    np.save(folder / "0.npy", arr)
    ev, info = read_recording(str(folder / "0.npy"))
    assert info.extra["dataset"] == "dvsgesture" and info.sensor_size == SensorSize(128, 128, 2)
    np.testing.assert_array_equal(ev["t"], arr[:, 3] * 1000)


@pytest.mark.parametrize("check_order", [True, False])
def test_file_shrinking_after_open_is_a_recording_error(gesture, tmp_path, check_order):
    """``_open`` maps the file for read_all: one that lost bytes since falls back to the read
    path, whose error names the first missing byte, instead of touching the lost pages (SIGBUS,
    which would kill this process; without the time check nothing else stops the kernel)."""
    path = tmp_path / "s.npy"
    np.save(path, gesture[:50_000].astype(EXPELLIARMUS))
    start = _numpy_header(path)[3]
    with open_recording(path, sensor_size=(128, 128), check_order=check_order) as rec:
        assert rec._mode == "records"
        with open(path, "r+b") as f:
            f.truncate(start + 16 * 1000 + 5)
        with pytest.raises(RecordingError, match=rf"s\.npy at byte {start + 16 * 1000 + 5}: file ends early"):
            rec.read_all()


def _mapped(path) -> bool:
    with open("/proc/self/maps") as f:
        return str(path) in f.read()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_the_map_made_at_open_is_released_by_read_all_and_by_close(gesture, tmp_path):
    """Files from MAP_BYTES are mapped once by ``_open`` (one open for header and data) and
    converted from that map by read_all; neither reading nor closing unread may leave it mapped.
    Small files and our own layout (read in place) are never mapped."""
    big, small, own = tmp_path / "big.npy", tmp_path / "small.npy", tmp_path / "own.npy"
    np.save(big, gesture[:20_000].astype(EXPELLIARMUS))
    np.save(small, gesture[:100].astype(EXPELLIARMUS))
    np.save(own, gesture[:20_000])
    assert big.stat().st_size >= MAP_BYTES > small.stat().st_size
    rec = open_recording(big, sensor_size=(128, 128))
    assert _mapped(big)
    np.testing.assert_array_equal(rec.read_all(), gesture[:20_000])
    assert not _mapped(big)
    with open_recording(big, sensor_size=(128, 128)) as rec:
        assert _mapped(big)
    assert not _mapped(big)
    for path, n in ((small, 100), (own, 20_000)):
        with open_recording(path, sensor_size=(128, 128)) as rec:
            assert not _mapped(path)
            np.testing.assert_array_equal(rec.read_all(), gesture[:n])
