"""HDF5 event files: DSEC-like columns, structured datasets, tonic's disk cache; the writer.

No real HDF5 recording is reachable (MANIFEST.md §4), so real events (a DVSGesture clip)
are written in each layout with h5py directly, and read back through
the layout's own reference code (tonic's DSEC loader logic, ``tonic.cached_dataset``).
"""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import tonic
from tonic.cached_dataset import load_from_disk_cache, save_to_disk_cache

from fuzzing import fuzz_reader
from spikeflow.drivers.recording import detect_format, open_recording, open_writer, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize


@pytest.fixture
def gesture(shared):
    ev, _ = read_recording(shared("recordings/slayer-dvsgesture/4.bs2"), dataset="dvsgesture")
    return ev


def test_writer_round_trip_in_chunks(gesture, tmp_path):
    path = tmp_path / "g.h5"
    with open_writer(path, (128, 128), extra={"camera": "DVS128"}) as w:
        for i in range(0, len(gesture), 50_000):
            w.write(gesture[i:i + 50_000])
    with h5py.File(path) as f:  # plain h5py sees the DSEC-like layout
        assert list(f["events"].attrs["sensor_size"]) == [128, 128, 2]
        np.testing.assert_array_equal(f["events/x"][()], gesture["x"])
    with open_recording(path, chunk_events=7000) as rec:
        assert rec.info.format == "hdf5" and rec.info.sensor_size == (128, 128, 2)
        chunks = list(rec)
    assert max(map(len, chunks)) <= 7000
    np.testing.assert_array_equal(np.concatenate(chunks), gesture)


def test_dsec_layout_with_t_offset(gesture, tmp_path):
    path = tmp_path / "events.h5"
    t_offset = 49_599_300_523
    with h5py.File(path, "w") as f:  # DSEC's dtypes: u2 x/y, u1 p, u4 t relative to t_offset
        f["events/x"] = gesture["x"].astype("u2")
        f["events/y"] = gesture["y"].astype("u2")
        f["events/p"] = gesture["p"].astype("u1")
        f["events/t"] = gesture["t"].astype("u4")
        f["t_offset"] = np.int64(t_offset)
        f["ms_to_idx"] = np.searchsorted(gesture["t"], np.arange(0, 1450, dtype=np.int64) * 1000).astype("u8")
    ev, info = read_recording(path)
    assert info.sensor_size == SensorSize(640, 480, 2) and info.extra["t_offset_us"] == t_offset
    with h5py.File(path) as file:  # what tonic.datasets.DSEC.__getitem__ does
        ref = tonic.io.make_structured_array(file["events"]["x"][()], file["events"]["y"][()],
                                             file["events"]["t"][()], file["events"]["p"][()],
                                             dtype=tonic.io.events_struct)
        ref["t"] += file["t_offset"][()]
    for k in "txyp":
        np.testing.assert_array_equal(ev[k], ref[k].astype(np.int64))


def test_tonic_disk_cache(gesture, tmp_path):
    path = tmp_path / "0_0.hdf5"
    tev = tonic.io.make_structured_array(gesture["x"], gesture["y"], gesture["t"], gesture["p"],
                                         dtype=tonic.io.events_struct)
    save_to_disk_cache(tev, 3, path)  # tonic.DiskCachedDataset's own writer (lzf)
    ev, info = read_recording(path, sensor_size=(128, 128))
    ref, target = load_from_disk_cache(path)
    assert info.extra["key"] == "data/0" and target == 3
    for k in "txyp":
        np.testing.assert_array_equal(ev[k], ref[k].astype(np.int64))


def test_structured_events_dataset_and_width_height_attrs(gesture, tmp_path):
    path = tmp_path / "s.h5"
    dt = np.dtype([("x", "<u2"), ("y", "<u2"), ("p", "i1"), ("t", "<i8")])
    arr = np.empty(len(gesture), dt)
    for k in "txyp":
        arr[k] = gesture[k]
    with h5py.File(path, "w") as f:
        f.create_dataset("events", data=arr, chunks=(4096,), compression="gzip")
        f.attrs["width"], f.attrs["height"] = 128, 128
    ev, info = read_recording(path, chunk_events=10_000)
    assert info.sensor_size == (128, 128, 2)
    np.testing.assert_array_equal(ev, gesture)


def test_root_columns_and_aliases_with_key(gesture, tmp_path):
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f["ts"], f["x"], f["y"], f["polarity"] = gesture["t"], gesture["x"], gesture["y"], gesture["p"]
        f.attrs["sensor_size"] = [128, 128]
    np.testing.assert_array_equal(read_recording(path)[0], gesture)
    np.testing.assert_array_equal(read_recording(path, key="/")[0], gesture)


def test_errors_name_key(gesture, tmp_path):
    nolayout = tmp_path / "n.h5"
    with h5py.File(nolayout, "w") as f:
        f["frames"] = np.zeros((2, 4, 4))
    with pytest.raises(RecordingError, match="no event layout found"):
        read_recording(nolayout)
    nosize = tmp_path / "ns.h5"
    with h5py.File(nosize, "w") as f:
        f["events"] = gesture
    with pytest.raises(RecordingError, match="events: sensor size unknown"):
        read_recording(nosize)
    ragged = tmp_path / "rg.h5"
    with h5py.File(ragged, "w") as f:
        f["events/t"], f["events/x"] = gesture["t"], gesture["x"][:-1]
        f["events/y"], f["events/p"] = gesture["y"], gesture["p"]
    with pytest.raises(RecordingError, match="equal length"):
        read_recording(ragged, sensor_size=(128, 128))
    floats = tmp_path / "fl.h5"
    with h5py.File(floats, "w") as f:
        f["events/t"], f["events/x"] = gesture["t"] / 1e6, gesture["x"]
        f["events/y"], f["events/p"] = gesture["y"], gesture["p"]
    with pytest.raises(RecordingError, match="events/t: expected integers"):
        read_recording(floats, sensor_size=(128, 128))
    with pytest.raises(RecordingError, match=r"events\[\d+\]: event \(\d+, \d+\) outside the 64x64"):
        read_recording(_written(gesture, tmp_path), sensor_size=(64, 64))


def _written(ev, tmp_path):
    p = tmp_path / "w.h5"
    with open_writer(p, (128, 128)) as w:
        w.write(ev)
    return p


def test_truncated_file(gesture, tmp_path):
    p = _written(gesture, tmp_path)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(RecordingError, match=r"cut\.h5"):
        read_recording(cut)


def test_detection_by_magic(gesture, tmp_path):
    p = _written(gesture, tmp_path)
    renamed = tmp_path / "clip.raw"
    renamed.write_bytes(p.read_bytes())
    assert detect_format(renamed) == "hdf5"


def test_clear_error_without_h5py(gesture, tmp_path):
    p = _written(gesture, tmp_path)
    code = ("import sys; sys.modules['h5py'] = None\n"
            "from spikeflow.drivers.recording import read_recording\n"
            "from spikeflow.service.errors import RecordingError\n"
            f"try:\n    read_recording({str(p)!r})\n"
            "except RecordingError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ERR" in out.stdout and "pip install 'spikeflow[hdf5]'" in out.stdout, out.stderr


def test_fuzz_hdf5(gesture, tmp_path):
    src = tmp_path / "src.h5"
    with open_writer(src, (128, 128)) as w:
        w.write(gesture[:2000])
    fz = tmp_path / "fz"
    fz.mkdir()
    counts = fuzz_reader(src, fz, format="hdf5", n_mutants=1000)
    assert counts["ok"] > 0 and counts["error"] > 0
    assert EVENT_DTYPE.names == ("t", "x", "y", "p")
