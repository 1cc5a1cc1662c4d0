"""N-MNIST .bin / SLAYER .bs2 reader and writer, checked against tonic.io.read_mnist_file.

Oracle: tonic's reader is the reference implementation of the layout (adapted from the
dataset author's own code) and MANIFEST.md confirms it against an independent numpy decoder
on every file used here.
"""

from __future__ import annotations

import numpy as np
import pytest
import tonic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import fuzz_reader
from spikeflow.drivers.formats import nmnist_bin
from spikeflow.drivers.recording import detect_format, open_recording, open_writer, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, make_events

GESTURE_COUNTS = {1: 63471, 2: 84260, 3: 113063, 4: 151879, 5: 181179, 6: 124244, 7: 159617,
                  8: 101288, 9: 141773, 10: 85936}


def _tonic(path):
    return tonic.io.read_mnist_file(str(path), dtype=tonic.io.events_struct)


def _same(ours, ref):
    assert ours.dtype == EVENT_DTYPE
    assert len(ours) == len(ref)
    for k in "txyp":
        np.testing.assert_array_equal(ours[k], ref[k].astype(np.int64), err_msg=k)


def test_sample_nmnist_matches_tonic(shared):
    path = shared("recordings/tonic-testdata/sample_nmnist.bin")
    ev, info = read_recording(path)
    assert info.format == "nmnist_bin"
    assert info.sensor_size == SensorSize(34, 34, 2)
    assert len(ev) == 4325  # MANIFEST.md
    _same(ev, _tonic(path))


@pytest.mark.parametrize("sample", [1, 2, 77, 500, 1000, 60001, 60050, 60100])
def test_slayer_nmnist_samples_match_tonic(shared, sample):
    path = shared(f"recordings/slayer-nmnist/{sample}.bs2")
    ev, info = read_recording(path)
    assert info.sensor_size == SensorSize(34, 34, 2)
    _same(ev, _tonic(path))
    assert 0.29e6 < ev["t"][-1] < 0.32e6  # three saccades, MANIFEST.md


@pytest.mark.parametrize("clip", sorted(GESTURE_COUNTS))
def test_slayer_dvsgesture_matches_tonic(shared, clip):
    path = shared(f"recordings/slayer-dvsgesture/{clip}.bs2")
    ev, info = read_recording(path, sensor_size=(128, 128, 2))
    assert info.sensor_size == SensorSize(128, 128, 2)
    assert len(ev) == GESTURE_COUNTS[clip]
    assert ev["t"][-1] <= 1_449_997
    _same(ev, _tonic(path))


def test_dataset_preset_equals_option(shared):
    path = shared("recordings/slayer-dvsgesture/3.bs2")
    a, ia = read_recording(path, dataset="dvsgesture")
    b, ib = read_recording(path, sensor_size="128x128")
    assert ia.sensor_size == ib.sensor_size == (128, 128, 2)
    np.testing.assert_array_equal(a, b)
    _, ic = read_recording(shared("recordings/tonic-testdata/sample_nmnist.bin"), dataset="ncaltech101")
    assert ic.sensor_size == (304, 240, 2)


def test_gesture_without_sensor_size_is_refused_not_guessed(shared):
    path = shared("recordings/slayer-dvsgesture/1.bs2")
    with pytest.raises(RecordingError, match=r"1\.bs2 at byte \d+: event \(\d+, \d+\) outside the 34x34 sensor"):
        read_recording(path)


def test_chunked_equals_whole(shared):
    path = shared("recordings/slayer-dvsgesture/5.bs2")
    whole, _ = read_recording(path, dataset="dvsgesture")
    with open_recording(path, dataset="dvsgesture", chunk_events=4097) as rec:
        chunks = list(rec)
    assert max(len(c) for c in chunks) <= 4097
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_writer_overflow_markers_round_trip_and_tonic_agrees(tmp_path):
    rng = np.random.default_rng(1)
    n = 5000
    t = np.sort(rng.integers(0, 30_000_000, n))  # beyond 2**23 us: needs overflow markers
    ev = make_events(t, rng.integers(0, 34, n), rng.integers(0, 34, n), rng.integers(0, 2, n))
    path = tmp_path / "long.bin"
    with open_writer(path, (34, 34)) as w:
        w.write(ev[:1234])
        w.write(ev[1234:])
    raw = np.fromfile(path, np.uint8).reshape(-1, 5)
    assert (raw[:, 1] == 240).sum() > 0
    for chunk in (3, 1 << 20):  # overflow markers split across chunk boundaries too
        with open_recording(path, chunk_events=chunk) as rec:
            back = rec.read_all()
        np.testing.assert_array_equal(back, ev)
    _same(back, _tonic(path))


def test_writer_sidecar_carries_sensor_size(shared, tmp_path):
    ev, _ = read_recording(shared("recordings/slayer-dvsgesture/2.bs2"), sensor_size=(128, 128))
    out = tmp_path / "copy.bs2"
    with open_writer(out, (128, 128)) as w:
        w.write(ev)
    assert out.read_bytes() == shared("recordings/slayer-dvsgesture/2.bs2").read_bytes()  # byte-identical
    back, info = read_recording(out)
    assert info.sensor_size == (128, 128, 2) and info.extra["sensor_size_source"] == "sidecar"
    np.testing.assert_array_equal(back, ev)


def test_writer_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(RecordingError, match="does not fit"):
        open_writer(tmp_path / "a.bin", (346, 260))
    with open_writer(tmp_path / "b.bin", (34, 34)) as w:
        with pytest.raises(RecordingError, match="polarity"):
            w.write(make_events([0], [1], [1], [3]))
        with pytest.raises(RecordingError, match="outside"):
            w.write(make_events([0], [34], [1], [1]))
        w.write(make_events([10], [1], [1], [1]))
        with pytest.raises(RecordingError, match="non-decreasing"):
            w.write(make_events([5], [1], [1], [1]))


def test_truncated_file_names_offset(shared, tmp_path):
    data = shared("recordings/tonic-testdata/sample_nmnist.bin").read_bytes()
    bad = tmp_path / "cut.bin"
    bad.write_bytes(data[:1003])
    with pytest.raises(RecordingError, match=r"cut\.bin at byte 1000: truncated record"):
        read_recording(bad, format="nmnist_bin")


def test_backward_timestamp_names_offset(tmp_path):
    rec = np.zeros((3, 5), np.uint8)
    rec[:, 0] = 1
    rec[:, 4] = [10, 20, 15]  # t = 10, 20, 15 us
    path = tmp_path / "back.bin"
    path.write_bytes(rec.tobytes())
    with pytest.raises(RecordingError, match=r"back\.bin at byte 10: timestamp goes backwards: 15 us after 20"):
        read_recording(path)
    ev, _ = read_recording(path, check_order=False)
    assert ev["t"].tolist() == [10, 20, 15]


def test_detection_needs_whole_records(tmp_path):
    ok = tmp_path / "a.bs2"
    ok.write_bytes(bytes(10))
    assert detect_format(ok) == "nmnist_bin"
    odd = tmp_path / "b.bs2"
    odd.write_bytes(bytes(11))
    with pytest.raises(RecordingError, match="unknown recording format"):
        detect_format(odd)


def test_unknown_dataset_is_an_error(shared):
    with pytest.raises(RecordingError, match="unknown dataset"):
        read_recording(shared("recordings/tonic-testdata/sample_nmnist.bin"), dataset="mnist9000")


def test_fuzz_nmnist(shared, tmp_path):
    counts = fuzz_reader(shared("recordings/tonic-testdata/sample_nmnist.bin"), tmp_path,
                         format="nmnist_bin", n_mutants=1000)
    assert counts["ok"] > 0 and counts["error"] > 0


def test_fuzz_nmnist_with_detection(shared, tmp_path):
    counts = fuzz_reader(shared("recordings/slayer-nmnist/42.bs2"), tmp_path, format=None,
                         n_mutants=300, seed=7)
    assert sum(counts.values()) == 300


def test_module_constants():
    assert nmnist_bin.OVERFLOW_STEP_US == 8192  # tonic.io / the dataset's reader


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.tuples(st.integers(0, 2**25), st.integers(0, 33), st.integers(0, 33), st.integers(0, 1)),
                     max_size=200),
       split=st.integers(0, 200), chunk=st.integers(1, 50))
def test_any_sorted_events_round_trip(tmp_path_factory, data, split, chunk):
    data.sort()
    ev = make_events(*zip(*data)) if data else make_events([], [], [], [])
    path = tmp_path_factory.mktemp("n") / "e.bin"
    with open_writer(path, (34, 34)) as w:
        w.write(ev[:split])
        w.write(ev[split:])
    with open_recording(path, chunk_events=chunk) as rec:
        back = rec.read_all()
    assert back.tobytes() == ev.tobytes()
    if len(ev):
        _same(back, _tonic(path))
