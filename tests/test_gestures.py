"""Procedural DVS128 gestures: labels, determinism, and statistics that match the real clips."""

from __future__ import annotations

import csv
import functools

import numpy as np
import pytest

from spikeflow.drivers.gestures import (GESTURE_CLASSES, gesture_statistics, render_gesture,
                                        simulate_gesture)
from spikeflow.drivers.recording import open_recording
from spikeflow.drivers.replay import replay
from spikeflow.recordings import HERE as RECORDINGS
from spikeflow.recordings import make_recordings as mk
from spikeflow.service.errors import ParamError
from spikeflow.service.events import as_events, is_sorted

RIGHT_HAND = (2, 4, 5)   # subject's right = camera-left
LEFT_HAND = (3, 6, 7)
CENTRED = (1, 8, 9)
ROTATING = (4, 5, 6, 7)


@functools.lru_cache(maxsize=None)
def synth(class_id: int, seed: int):
    """Statistics of the bundled clip (class, seed): simulate_gesture's output, as
    test_bundled_recording_regenerates_bit_exactly checks; reading it is cheaper than simulating."""
    from spikeflow.drivers.recording import read_recording

    ev, _ = read_recording(RECORDINGS / mk.clip_name(class_id, seed))
    return gesture_statistics(ev)


@functools.lru_cache(maxsize=None)
def real(path: str):
    from tonic.io import read_mnist_file  # reference decoder of the SLAYER .bs2 layout

    raw = read_mnist_file(path, dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    return gesture_statistics(as_events(raw))


def test_class_names_are_dvsgesture_mapping():
    assert GESTURE_CLASSES == (
        "hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
        "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise",
        "arm_roll", "air_drums", "air_guitar", "other_gestures")


@pytest.mark.parametrize("class_id", range(1, 11))
def test_synthetic_matches_real_clip_statistics(shared, class_id):
    r = real(str(shared(f"recordings/slayer-dvsgesture/{class_id}.bs2")))
    s = synth(class_id, 0)
    # the side of the moving hand (camera view: the subject's right hand is on camera-left)
    for st in (r, s):
        if class_id in RIGHT_HAND:
            assert st["left_fraction"] > 0.7
        elif class_id in LEFT_HAND:
            assert st["left_fraction"] < 0.3
        elif class_id in CENTRED:
            assert 0.3 < st["left_fraction"] < 0.7
    # rotation sense of the event centroid agrees with the real clip
    if class_id in ROTATING:
        assert np.sign(s["turns"]) == np.sign(r["turns"])
        assert abs(s["turns"]) > 0.8 and abs(r["turns"]) > 0.8
    # rhythm: claps and waves beat at 3.3-5.6 Hz, arm circles below 3 Hz (as in the real clips)
    if class_id in (1, 2, 3):
        assert 3.3 <= s["rhythm_hz"] <= 5.6 and 3.3 <= r["rhythm_hz"] <= 5.6
    if class_id in ROTATING:
        assert s["rhythm_hz"] < 3.0 and r["rhythm_hz"] < 3.0
    assert 0.45 < s["on_fraction"] < 0.62
    assert abs(s["cy"] - r["cy"]) < 25  # roughly the same height in the frame


@pytest.mark.parametrize("class_id", ROTATING)
def test_rotation_sense_holds_for_other_subjects(class_id):
    # subject's clockwise (4, 6) turns counter-clockwise on camera (positive, y up)
    want = 1 if class_id in (4, 6) else -1
    for seed in (1, 2, 3, 4, 5):
        assert np.sign(synth(class_id, seed)["turns"]) == want


def test_hand_side_separates_right_and_left_classes():
    for seed in (1, 2, 3, 4, 5):
        right = [synth(c, seed)["left_fraction"] for c in (2, 4, 5)]
        left = [synth(c, seed)["left_fraction"] for c in (3, 6, 7)]
        assert min(right) > 0.7 > 0.3 > max(left)


def test_render_is_deterministic_and_randomised_by_seed():
    f1, t1 = render_gesture(2, duration_us=100_000, seed=7)
    f2, _ = render_gesture(2, duration_us=100_000, seed=7)
    f3, _ = render_gesture(2, duration_us=100_000, seed=8)
    assert f1.shape == (51, 128, 128) and f1.dtype == np.float32  # 500 fps
    assert t1[0] == 0 and t1[-1] == 100_000
    assert np.array_equal(f1, f2) and not np.array_equal(f1, f3)
    assert 0 <= f1.min() and f1.max() <= 1
    # something moves: consecutive frames differ, and most of the scene is static
    diff = np.abs(np.diff(f1, axis=0)) > 1e-3
    assert 0.001 < diff.mean() < 0.2


def test_simulate_gesture_deterministic_and_sized():
    a = simulate_gesture(10, seed=3, duration_us=200_000, size=64)
    b = simulate_gesture(10, seed=3, duration_us=200_000, size=64)
    c = simulate_gesture(10, seed=4, duration_us=200_000, size=64)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(a) > 500 and is_sorted(a)
    assert a["x"].max() < 64 and a["y"].max() < 64 and a["t"].max() < 200_000


def test_other_class_differs_between_seeds():
    a = render_gesture(11, duration_us=200_000, seed=0)[0]
    b = render_gesture(11, duration_us=200_000, seed=1)[0]
    assert not np.array_equal(a, b)


def test_bad_class_and_parameters():
    for bad in (0, 12, 2.0, True):
        with pytest.raises(ParamError, match="gesture.class_id"):
            render_gesture(bad)
    with pytest.raises(ParamError, match="gesture.duration_us"):
        render_gesture(1, duration_us=-5)
    with pytest.raises(ParamError, match="gesture.size"):
        render_gesture(1, size=4)
    with pytest.raises(ParamError, match="gesture.seed"):
        render_gesture(1, seed=-1)


# -- the bundled recordings --------------------------------------------------------------------

def _index():
    with open(RECORDINGS / mk.INDEX, newline="") as f:
        return list(csv.DictReader(f))


def test_bundled_index_covers_every_class_and_split():
    rows = _index()
    assert len(rows) == 11 * len(mk.SEEDS)
    assert {int(r["label"]) for r in rows} == set(range(1, 12))
    for r in rows:
        assert r["name"] == GESTURE_CLASSES[int(r["label"]) - 1]
        assert r["split"] == ("test" if int(r["seed"]) in mk.TEST_SEEDS else "train")
    train_seeds = {r["seed"] for r in rows if r["split"] == "train"}
    test_seeds = {r["seed"] for r in rows if r["split"] == "test"}
    assert train_seeds and test_seeds and not train_seeds & test_seeds
    total = sum((RECORDINGS / r["file"]).stat().st_size for r in rows)
    assert total < 20e6


def test_bundled_files_open_with_their_labels():
    for r in _index():
        with open_recording(RECORDINGS / r["file"]) as rec:
            assert rec.info.format == "native"
            assert tuple(rec.info.sensor_size) == (128, 128, 2)
            assert rec.info.extra["label"] == int(r["label"]) and rec.info.extra["name"] == r["name"]
            assert rec.info.extra["seed"] == int(r["seed"]) and rec.info.extra["split"] == r["split"]


@pytest.mark.parametrize("class_id, seed", [(5, 4), (11, 1)])
def test_bundled_recording_regenerates_bit_exactly(tmp_path, class_id, seed):
    row = mk.make_clip(class_id, seed, tmp_path)
    assert (tmp_path / row["file"]).read_bytes() == (RECORDINGS / row["file"]).read_bytes()


def test_bundled_recording_replays():
    path = RECORDINGS / mk.clip_name(3, 0)
    with open_recording(path) as rec:
        ev = rec.read_all()
    packets = list(replay(path, window_us=10_000, speed=0))
    assert sum(p.count for p in packets) == len(ev) > 5000
    st = gesture_statistics(ev)
    assert st["left_fraction"] < 0.3  # a left-hand wave, on camera-right


def test_bundled_classes_separable_by_simple_statistics():
    """Nearest class centroid on 8 per-clip statistics, train subjects -> held-out subjects."""
    from spikeflow.drivers.recording import read_recording

    feats, labels, split = [], [], []
    for r in _index():
        ev, _ = read_recording(RECORDINGS / r["file"])
        st = gesture_statistics(ev)
        feats.append([st["left_fraction"], st["turns"], st["rhythm_hz"], st["cx"], st["cy"],
                      np.log(st["events"]), ev["x"].std(), ev["y"].std()])
        labels.append(int(r["label"]))
        split.append(r["split"] == "train")
    f, y, tr = np.array(feats), np.array(labels), np.array(split)
    z = (f - f[tr].mean(0)) / f[tr].std(0)
    centroids = np.array([z[tr & (y == c)].mean(0) for c in range(1, 12)])
    pred = np.argmin(((z[~tr][:, None] - centroids[None]) ** 2).sum(-1), axis=1) + 1
    assert np.mean(pred == y[~tr]) >= 0.8  # chance is 1/11
