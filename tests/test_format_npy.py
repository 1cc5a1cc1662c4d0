"""tonic's preprocessed .npy samples: structured arrays in any field order/dtype and the (N, 4)
dataset layouts, checked against tonic's own conversion code on real recordings."""

from __future__ import annotations

import json

import numpy as np
import numpy.lib.recfunctions as rfn
import pytest
import tonic

from fuzzing import fuzz_reader
from spikeflow.drivers.recording import detect_format, open_recording, open_writer, read_recording
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
