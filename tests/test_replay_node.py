"""The ``replay`` node: playlists on one clock, ground truth from labeled recordings, reader
options for formats without a sensor size in the file."""

from __future__ import annotations

import numpy as np
import pytest

from spikeflow import recordings
from spikeflow.drivers.recording import read_recording
from spikeflow.nodes.base import build_params
from spikeflow.nodes.io import ALIGN_US, Replay
from spikeflow.service.errors import ParamError

CLIPS = ["gesture_02_right_hand_wave_s4.sfe", "gesture_07_left_arm_counter_clockwise_s5.sfe"]


def _node(**params):
    node = Replay("src", build_params(Replay, params, key="nodes.src.params"))
    node.setup({})
    return node


def test_playlist_plays_files_back_to_back_with_truth():
    node = _node(paths=CLIPS, speed=0, gap_us=250_000, window_us=5000)
    pkts = [p for _, p in node.packets()]
    assert [p.seq for p in pkts] == list(range(len(pkts)))
    assert all(a.t1_us == b.t0_us for a, b in zip(pkts, pkts[1:]) if a.data["truth"] == b.data["truth"])
    t = np.concatenate([p.events["t"] for p in pkts])
    assert np.all(np.diff(t) >= 0)  # one monotonic clock across files
    truths = [p.data["truth"] for p in pkts]
    labels = sorted({(d["label"], d["name"], d["onset_us"]) for d in truths})
    assert [(lab, name) for lab, name, _ in labels] == [(2, "right_hand_wave"), (7, "left_arm_counter_clockwise")]
    onset2 = labels[1][2]
    assert onset2 % ALIGN_US == 0
    first = [p for p in pkts if p.data["truth"]["label"] == 2]
    assert onset2 >= first[-1].t1_us + 250_000  # the gap of silence
    # every event of both files delivered exactly once, shifted as a whole
    for clip, lab in zip(CLIPS, (2, 7)):
        ev, _ = read_recording(recordings.path(clip))
        got = np.concatenate([p.events for p in pkts if p.data["truth"]["label"] == lab])
        assert len(got) == len(ev)
        assert np.array_equal(got["x"], ev["x"]) and np.array_equal(np.diff(got["t"]), np.diff(ev["t"]))
    assert node.stats()["files"] == 2 and node.stats()["events_out"] == len(t)


def test_path_and_paths_are_exclusive():
    with pytest.raises(ParamError, match="give exactly one of `path` or `paths`"):
        _node(path=CLIPS[0], paths=CLIPS)
    with pytest.raises(ParamError, match="loop is for a single"):
        _node(paths=CLIPS, loop=True)


def test_sensor_size_reaches_readers_that_take_it(shared):
    clip = shared("recordings/slayer-dvsgesture/4.bs2")
    node = _node(path=str(clip), speed=0, sensor_size=[128, 128, 2], window_us=10_000)
    n = sum(p.count for _, p in node.packets())
    assert n == 151_879  # MANIFEST.md: 4.bs2 holds 151,879 events, x and y up to 127
    assert tuple(node.sensor_size) == (128, 128, 2)
