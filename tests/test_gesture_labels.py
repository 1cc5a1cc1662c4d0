"""DVS128 Gesture labels CSV and cutting a labeled AEDAT 3.1 recording into samples.

The recording is generated: the ten real DvsGesture clips of ../shared (SLAYER .bs2, decoded by
tonic) written back to back as an AEDAT 3.1 ``user01_test.aedat`` with a ``_labels.csv`` beside
it, as the DvsGesture dataset lays them out. Cutting must give back each clip exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import tonic.io

from spikeflow.drivers.gesture_labels import (GESTURE_CLASSES, GestureLabels, cut_samples, read_labels,
                                              write_labels)
from spikeflow.drivers.recording import open_writer
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import make_events

GAP_US = 2_000_000
CLIP_US = 1_450_000
BS2_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i2")])


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    from conftest import shared_file
    d = tmp_path_factory.mktemp("gesture")
    clips, parts = [], []
    for k, cls in enumerate(range(1, 11)):
        r = tonic.io.read_mnist_file(str(shared_file(f"recordings/slayer-dvsgesture/{cls}.bs2")), dtype=BS2_DTYPE)
        ev = make_events(r["t"] + 1_000_000 + k * GAP_US, r["x"], r["y"], r["p"])
        clips.append(ev)
        parts.append(ev)
    rec = d / "user01_test.aedat"
    with open_writer(rec, (128, 128)) as w:
        w.write(np.concatenate(parts))
    starts = 1_000_000 + GAP_US * np.arange(10)
    labels = GestureLabels(np.arange(1, 11, dtype=np.int16), starts, starts + CLIP_US)
    write_labels(d / "user01_test_labels.csv", labels)
    return rec, clips, labels


def test_read_labels(labeled):
    rec, _, labels = labeled
    got = read_labels(rec.with_name("user01_test_labels.csv"))
    assert got.label.dtype == np.int16 and got.start_us.dtype == np.int64
    for a, b in zip(got, labels):
        assert np.array_equal(a, b)
    assert GESTURE_CLASSES[int(got.label[0])] == "hand_clapping" and len(GESTURE_CLASSES) == 11


@pytest.mark.parametrize("chunk", [997, 1 << 20])
def test_cut_samples_gives_back_each_clip(labeled, chunk):
    rec, clips, _ = labeled
    samples = list(cut_samples(rec, chunk_events=chunk))  # labels found beside the recording
    assert [s.label for s in samples] == list(range(1, 11))
    for s, clip in zip(samples, clips):
        assert np.array_equal(s.events, clip)
        assert s.end_us - s.start_us == CLIP_US and tuple(s.sensor_size) == (128, 128, 2)
        assert s.events["t"].min() >= s.start_us and s.events["t"].max() < s.end_us


def test_cut_half_open_windows_and_empty_window(labeled):
    rec, clips, _ = labeled
    t0 = int(clips[0]["t"][0])
    t_last = int(clips[0]["t"][-1])
    lab = GestureLabels(np.array([11, 2, 3], np.int16), np.array([t0, t_last, 10**12]),
                        np.array([t_last, 10**11, 10**12 + 5]))
    s = list(cut_samples(rec, lab, chunk_events=5000))
    assert np.array_equal(s[0].events, clips[0][clips[0]["t"] < t_last])  # end excluded
    assert s[1].events["t"][0] == t_last                                    # start included
    assert len(s[2].events) == 0 and s[2].label == 3


@pytest.mark.parametrize("text,match,line", [
    ("", "empty labels file", None),
    ("klass,start,end\n1,2,3\n", "line 1: expected header", 1),
    ("class,startTime_usec,endTime_usec\n1,2\n", "line 2: expected 3", 2),
    ("class,startTime_usec,endTime_usec\n1,2,x\n", "line 2: expected integers", 2),
    ("class,startTime_usec,endTime_usec\n12,2,3\n", "class 12 outside 1..11", 2),
    ("class,startTime_usec,endTime_usec\n1,5,5\n", "start < end", 2),
    ("class,startTime_usec,endTime_usec\n1,5,9\n\n2,8,12\n", "line 4: window starts at 8", 4),
])
def test_bad_labels(tmp_path, text, match, line):
    path = tmp_path / "x_labels.csv"
    path.write_text(text)
    with pytest.raises(RecordingError, match=match) as e:
        read_labels(path)
    assert str(path) in str(e.value)
    if line is not None:  # the offset is the byte where the faulty line starts
        assert e.value.offset == sum(len(s) + 1 for s in text.split("\n")[:line - 1])


def test_missing_labels_file(tmp_path):
    rec = tmp_path / "user09_none.aedat"
    with open_writer(rec, (128, 128)) as w:
        w.write(make_events([1], [1], [1], [1]))
    with pytest.raises(RecordingError, match="no such labels file"):
        list(cut_samples(rec))
