"""Readouts on separable toy features, and the sliding-window classifier node."""

from __future__ import annotations

import numpy as np
import pytest

from spikeflow.nodes.base import PortMeta
from spikeflow.nodes.classifiers import UNCERTAIN, Classifier, ClassifierParams
from spikeflow.nodes.readout import (READOUTS, ClassResponseReadout, Readout, grid_counts,
                                     grid_first_spike)
from spikeflow.service.errors import ModelError
from spikeflow.service.events import SensorSize, make_events
from spikeflow.service.packet import Packet


def toy_features(n=400, k=4, d=40, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.random((k, d)) * 5
    y = rng.integers(0, k, n)
    return rng.poisson(centers[y]).astype(float), y


@pytest.mark.parametrize("name,min_acc", [("svm", 0.95), ("logistic", 0.95), ("ridge", 0.95),
                                          ("class_response", 0.75), ("rstdp", 0.8)])
def test_readouts_separate_toy_classes(name, min_acc):
    X, y = toy_features()
    r = READOUTS[name](seed=0).fit(X[:300], y[:300])
    acc = (r.predict(X[300:]) == y[300:]).mean()
    assert acc >= min_acc, f"{name}: {acc:.2f} < {min_acc}"
    # state round trip gives the same predictions (no pickle: plain arrays)
    r2 = Readout.from_state({k: np.asarray(v) for k, v in r.state().items()})
    assert np.array_equal(r2.predict(X[300:]), r.predict(X[300:]))


def test_readout_training_is_deterministic():
    X, y = toy_features()
    a = READOUTS["rstdp"](seed=3).fit(X, y).state()["w"]
    b = READOUTS["rstdp"](seed=3).fit(X, y).state()["w"]
    assert np.array_equal(a, b)


def test_class_response_assigns_units_to_their_preferred_class():
    X = np.array([[5, 0, 0], [6, 0, 1], [0, 4, 0], [0, 5, 0]], float)
    y = np.array([0, 0, 1, 1])
    r = ClassResponseReadout().fit(X, y)
    assert list(r.assign_[:2]) == [0, 1]
    assert list(r.predict(np.array([[3, 0, 0], [0, 3, 0]], float))) == [0, 1]


def test_unknown_readout_kind_is_a_model_error():
    with pytest.raises(ModelError, match="unknown readout_kind"):
        Readout.from_state({"readout_kind": np.array("nope")}, source="m.npz")


def test_grid_counts_and_first_spike():
    ev = make_events([10, 20, 30, 40], [0, 9, 0, 9], [0, 0, 9, 9], [0, 1, 1, 1])
    c = grid_counts(ev, (10, 10, 2), grid=(2, 2))
    # map 0: one spike in cell 0; map 1: cells 1, 2, 3
    assert c.tolist() == [1, 0, 0, 0, 0, 1, 1, 1]
    f = grid_first_spike(ev, (10, 10, 2), grid=(1, 1), t0_us=0, horizon_us=100)
    assert np.allclose(f, [0.9, 0.8])
    with pytest.raises(ValueError, match="out of range"):
        grid_counts(ev, (10, 10, 1))


def _spike_packet(seq, t0, t1, fmap, n, size=(8, 8, 2), rng=None):
    rng = rng or np.random.default_rng(seq)
    t = np.sort(rng.integers(t0, t1, n))
    ev = make_events(t, rng.integers(0, 8, n), rng.integers(0, 8, n), np.full(n, fmap))
    return Packet(kind="spikes", stream="conv.spikes_out", seq=seq, sensor_size=SensorSize(*size),
                  t0_us=t0, t1_us=t1, sent_ns=1, events=ev)


def _two_map_readout():
    X = np.array([[20, 0], [25, 1], [1, 22], [0, 30]], float)
    return READOUTS["logistic"]().fit(X, np.array([3, 3, 7, 7]))


def test_classifier_node_decides_per_stride_and_flags_uncertainty(tmp_path):
    model = tmp_path / "readout.npz"
    np.savez(model, **_two_map_readout().state())
    node = Classifier("cls", ClassifierParams(model=str(model), window_us=20_000, stride_us=10_000,
                                              confidence=0.6, min_spikes=5, class_names=("three", "seven")))
    node.setup({"spikes_in": PortMeta("spikes", SensorSize(8, 8, 2))})
    outs = []
    # 40 ms of map-0 evidence, 20 ms of silence, 40 ms of map-1 evidence; 5 ms packets
    for i in range(20):
        t0, t1 = i * 5000, (i + 1) * 5000
        fmap, n = (0, 30) if i < 8 else ((None, 0) if i < 12 else (1, 30))
        pkt = _spike_packet(i, t0, t1, fmap if fmap is not None else 0, n)
        outs += node.process("spikes_in", pkt).get("labels_out", [])
    assert [p.t1_us for p in outs] == [10_000 * (k + 1) for k in range(10)]
    assert all(p.kind == "labels" for p in outs)
    seq = [p.data["class"] for p in outs]
    assert seq[:4] == [3, 3, 3, 3]
    assert seq[5] == UNCERTAIN and outs[5].data["name"] == "uncertain"  # 40–60 ms: silence only
    assert seq[-2:] == [7, 7] and outs[-1].data["name"] == "seven"
    assert all(abs(sum(p.data["scores"]) - 1) < 1e-9 for p in outs)
    assert [p.seq for p in outs] == list(range(10))
    assert node.stats()["decisions"] == 10 and node.stats()["uncertain"] >= 1


def test_classifier_without_model_is_a_clear_error():
    node = Classifier("cls")
    node.setup({"spikes_in": PortMeta("spikes", SensorSize(8, 8, 2))})
    with pytest.raises(ModelError, match="no readout loaded"):
        node.process("spikes_in", _spike_packet(0, 0, 1000, 0, 3))


def test_label_packets_round_trip_the_wire_protocol(tmp_path):
    from spikeflow.service.protocol import decode, encode

    model = tmp_path / "readout.npz"
    np.savez(model, **_two_map_readout().state())
    node = Classifier("cls", ClassifierParams(model=str(model), window_us=10_000, stride_us=10_000,
                                              class_names=("three", "seven")))
    node.setup({"spikes_in": PortMeta("spikes", SensorSize(8, 8, 2))})
    pkt = node.process("spikes_in", _spike_packet(0, 0, 10_000, 1, 40))["labels_out"][0]
    frames = [bytes(f) for f in encode(pkt)]
    topic, back = decode(frames)
    assert back.kind == "labels" and back.seq == pkt.seq and (back.t0_us, back.t1_us) == (pkt.t0_us, pkt.t1_us)
    assert back.data == pkt.data and back.data["name"] == "seven"


def _truth_packet(seq, t0, t1, label, onset):
    return Packet(kind="events", stream="src.events_out", seq=seq, sensor_size=SensorSize(8, 8, 2), t0_us=t0,
                  t1_us=t1, sent_ns=1, events=make_events([], [], [], []),
                  data={"truth": {"label": label, "name": f"c{label}", "onset_us": onset}})


def _label_packet(seq, t1, cls, scores, uncertain=False):
    return Packet(kind="labels", stream="cls.labels_out", seq=seq, t0_us=t1 - 10_000, t1_us=t1, sent_ns=0,
                  data={"class": -1 if uncertain else cls, "name": "x", "confidence": max(scores),
                        "uncertain": uncertain, "classes": [3, 7], "scores": scores})


def test_scoreboard_scores_segments_and_latency(capsys):
    from spikeflow.nodes.scoreboard import Scoreboard, ScoreboardParams

    sb = Scoreboard("score", ScoreboardParams(show="all"))
    sb.setup({})
    # segment A (truth 3) on [0, 100 ms), segment B (truth 7) on [200, 300 ms)
    for i, (t0, lab, onset) in enumerate([(0, 3, 0), (50_000, 3, 0), (200_000, 7, 200_000), (250_000, 7, 200_000)]):
        sb.process("truth_in", _truth_packet(i, t0, t0 + 50_000, lab, onset))
    sb.process("labels_in", _label_packet(0, 30_000, 3, [0.5, 0.5], uncertain=True))
    sb.process("labels_in", _label_packet(1, 60_000, 3, [0.9, 0.1]))      # first correct at 60 ms
    sb.process("labels_in", _label_packet(2, 230_000, 3, [0.6, 0.4]))     # wrong
    sb.process("labels_in", _label_packet(3, 280_000, 7, [0.1, 0.9]))     # correct at +80 ms; sum favours 7
    s = sb.summary()
    assert s["segments"] == 2 and s["scored"] == 2 and s["accuracy"] == 1.0
    assert s["onset_to_first_correct_p50_ms"] == pytest.approx(70.0)
    sb.flush()
    out = capsys.readouterr().out
    assert "truth: c3" in out and "✗" in out and "summary: 2 labeled recordings, accuracy 100.0 %" in out


def test_scoreboard_matches_labels_that_arrive_before_their_truth():
    """Labels and truth can come over different edges: scoring is by sensor time, at the end."""
    from spikeflow.nodes.scoreboard import Scoreboard, ScoreboardParams

    sb = Scoreboard("score", ScoreboardParams(show="none", summary=False))
    sb.setup({})
    sb.process("truth_in", _truth_packet(0, 0, 50_000, 3, 0))
    sb.process("labels_in", _label_packet(0, 40_000, 3, [0.9, 0.1]))
    sb.process("labels_in", _label_packet(1, 230_000, 7, [0.2, 0.8]))  # before segment B's truth
    sb.process("truth_in", _truth_packet(1, 200_000, 250_000, 7, 200_000))
    s = sb.summary()
    assert s["scored"] == 2 and s["accuracy"] == 1.0
    assert s["onset_to_first_correct_p50_ms"] == pytest.approx(35.0)  # (40 + 30) / 2
