"""Labeled dataset sources: directories with CSV, tonic's loaders on a small on-disk copy,
the DVS128 Gesture original layout, SLAYER N-MNIST from ../shared."""

from __future__ import annotations

import numpy as np
import pytest

from spikeflow.drivers.datasets import (DatasetError, LabeledDirectory, TonicDataset, open_dataset)
from spikeflow.drivers.recording import open_writer
from spikeflow.service.events import make_events


def _events(n, seed, size=128):
    rng = np.random.default_rng(seed)
    return make_events(np.sort(rng.integers(0, 100_000, n)), rng.integers(0, size, n),
                       rng.integers(0, size, n), rng.integers(0, 2, n))


def test_labeled_directory_with_splits_and_groups(tmp_path):
    rows = ["file,label,split,group,name"]
    for i in range(6):
        with open_writer(tmp_path / f"s{i}.sfe", (128, 128, 2)) as w:
            w.write(_events(50 + i, i))
        rows.append(f"s{i}.sfe,{1 + i % 2},{'train' if i < 4 else 'test'},subj{i // 2},{'a' if i % 2 == 0 else 'b'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    train = LabeledDirectory(tmp_path, split="train")
    test = open_dataset(f"dir:{tmp_path}", split="test")
    assert len(train) == 4 and len(test) == 2
    assert train.classes == ("a", "b") and train.label_base == 1
    samples = list(train)
    assert [s.label for s in samples] == [1, 2, 1, 2]
    assert [len(s.events) for s in samples] == [50, 51, 52, 53]
    assert {s.group for s in samples} == {"subj0", "subj1"}
    assert {s.group for s in test} == {"subj2"}


def test_labeled_directory_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="labels.csv: labels file not found"):
        LabeledDirectory(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\nx.sfe,seven\n")
    with pytest.raises(DatasetError, match=r"labels.csv:2: label 'seven' is not an integer"):
        LabeledDirectory(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\nmissing.sfe,1\n")
    with pytest.raises(DatasetError, match="'missing.sfe' not found"):
        list(LabeledDirectory(tmp_path))


def test_open_dataset_rejects_unknown_specs():
    with pytest.raises(DatasetError, match="cannot understand data source"):
        open_dataset("ftp:nowhere")


def test_tonic_dvsgesture_is_read_by_tonic_from_a_local_copy(tmp_path):
    # tonic's own layout: <root>/DVSGesture/ibmGestureTrain/userNN_<light>/<class>.npy with
    # columns x, y, p, t(ms) — tonic converts ms -> us itself; it needs >= 100 .npy files.
    base = tmp_path / "DVSGesture"
    (base / "ibmGestureTrain").mkdir(parents=True)
    (base / "ibmGestureTrain.tar.gz").write_bytes(b"")  # tonic checks presence only
    expected = {}
    for user in range(1, 11):
        d = base / "ibmGestureTrain" / f"user{user:02d}_fluorescent"
        d.mkdir()
        for cls in range(10):
            ev = _events(20, user * 100 + cls)
            arr = np.stack([ev["x"], ev["y"], ev["p"], ev["t"] / 1000.0], axis=1)
            np.save(d / f"{cls}.npy", arr)
            expected[(user, cls)] = ev
    ds = TonicDataset("DVSGesture", tmp_path, split="train")
    assert len(ds) == 100 and tuple(ds.sensor_size) == (128, 128, 2)
    got = {(int(s.group[4:]), s.label): s for s in ds}
    assert len(got) == 100
    s = got[(3, 7)]
    ref = expected[(3, 7)]
    order = np.argsort(ref["t"], kind="stable")
    assert np.array_equal(s.events["x"], ref["x"][order]) and np.array_equal(s.events["p"], ref["p"][order])
    assert np.allclose(s.events["t"], ref["t"][order], atol=1)


def test_tonic_dataset_absent_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=r"DVSGesture: no DVSGesture copy on disk"):
        TonicDataset("DVSGesture", tmp_path, split="test")
    with pytest.raises(DatasetError, match="unknown tonic dataset"):
        TonicDataset("CIFAR10DVS", tmp_path)


def test_dvs128_original_layout_splits_by_user(tmp_path):
    from spikeflow.drivers.gesture_labels import GestureLabels, write_labels

    # users 2 (train) and 25 (test), each with one AEDAT 3.1 recording holding 3 labeled gestures
    for user in (2, 25):
        ev = _events(3000, user)
        ev["t"] = np.sort(np.random.default_rng(user).integers(0, 3_000_000, 3000))
        with open_writer(tmp_path / f"user{user:02d}_led.aedat", (128, 128, 2), format="aedat31") as w:
            w.write(ev)
        write_labels(tmp_path / f"user{user:02d}_led_labels.csv",
                     GestureLabels(np.array([3, 5, 11], np.int16), np.array([0, 1_000_000, 2_000_000]),
                                   np.array([900_000, 1_900_000, 2_900_000])))
    train = open_dataset(f"dvs128:{tmp_path}", split="train")
    test = open_dataset(f"dvs128:{tmp_path}", split="test")
    assert len(train) == 3 and len(test) == 3
    got = list(train)
    assert [s.label for s in got] == [3, 5, 11] and {s.group for s in got} == {"user02"}
    assert {s.group for s in test} == {"user25"}
    for s in got:
        assert len(s.events) and s.events["t"].min() >= 0
    assert got[1].events["t"].min() >= 1_000_000 and got[1].events["t"].max() < 1_900_000
    assert train.classes[10] == "other_gestures"


def test_slayer_nmnist_labels_from_shared(shared):
    root = shared("recordings/slayer-nmnist")
    train = open_dataset(f"slayer-nmnist:{root}", split="train")
    test = open_dataset(f"slayer-nmnist:{root}", split="test")
    assert len(train) == 1000 and len(test) == 100
    # MNIST training labels begin 5, 0, 4, 1; test labels 7, 2, 1, 0 (MANIFEST.md)
    assert list(train.labels()[:4]) == [5, 0, 4, 1] and list(test.labels()[:4]) == [7, 2, 1, 0]
    assert np.bincount(test.labels(), minlength=10).tolist() == [8, 14, 8, 11, 14, 7, 10, 15, 2, 11]
    first = next(iter(test))
    assert tuple(first.sensor_size) == (34, 34, 2) and 1000 < len(first.events) < 8000
