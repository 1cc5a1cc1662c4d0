"""Spiking layers, worked by hand: known inputs -> expected spikes, winners, weight changes; the
learning-rate schedule; convergence; learned state on disk; the snn_conv / snn_pool nodes."""

from __future__ import annotations

import numpy as np
import pytest

from spikeflow.nodes.base import PortMeta, build_params
from spikeflow.nodes.learned_state import load_state, save_state
from spikeflow.nodes.snn import (NO_SPIKE, FirstSpikePool, FirstSpikePoolNode, Network, SpikingConv,
                                 SpikingConvNode, Stdp, events_from_times, to_wave)
from spikeflow.nodes import snn_kernels as sk
from spikeflow.service.errors import GraphError, ModelError
from spikeflow.service.events import SensorSize, make_events
from spikeflow.service.packet import Packet

NS = NO_SPIKE
INF = np.inf

# 1 channel, 3x3, T = 4
TIMES = np.array([[[0, 1, NS],
                   [2, NS, 0],
                   [NS, 3, 1]]], dtype=np.int32)
W = np.array([[[[1.0, 0.5],
                [0.25, 0.125]]]])


def hand_conv(threshold=1.0, **kw):
    conv = SpikingConv(1, 1, 2, threshold, pointwise_inhibition=False, **kw)
    conv.weights = W.copy()
    return conv


@pytest.mark.parametrize("path", ["event", "dense", "auto"])
def test_if_conv_hand_worked(path):
    # out(0,0): V = 1.0 @t0 (not > 1), 1.5 @t1 -> fires at 1;   final 1.75
    # out(0,1): V = .125 @t0, 1.125 @t1 -> fires at 1;          final 1.125
    # out(1,0): V = 1.0 @t2 (not > 1), 1.125 @t3 -> fires at 3
    # out(1,1): .5, .625, .625, .875 -> never
    res = hand_conv(path=path).forward(TIMES, 4)
    np.testing.assert_array_equal(res.times, [[[1, 1], [3, NS]]])
    np.testing.assert_allclose(res.v_first, [[[1.5, 1.125], [1.125, 0.0]]])
    np.testing.assert_allclose(res.v_final, [[[1.75, 1.125], [1.125, 0.875]]])


def test_conv_accepts_every_sample_form():
    conv = hand_conv()
    as_float = np.where(TIMES == NS, INF, TIMES).astype(float)
    np.testing.assert_array_equal(conv(as_float, time_steps=4), [[[1, 1], [3, INF]]])
    wave = to_wave(TIMES, 4)
    out = conv(wave)
    assert out.shape == (4, 1, 2, 2)
    np.testing.assert_array_equal(out[:, 0, 0, 0], [0, 1, 1, 1])     # cumulative wave from t=1
    np.testing.assert_array_equal(out[:, 0, 1, 1], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="non-negative whole"):
        conv(np.full((1, 3, 3), 0.5))
    with pytest.raises(ValueError, match=r"expected \(1, H, W\)"):
        conv.forward(np.zeros((2, 3, 3), np.int32), 4)


def test_lif_leak_hand_worked():
    # leak 0.5: out(0,0): 1.0, .5+.5 = 1.0, .5+.25 = .75 -> never; out(0,1): .125, .0625+1 -> fires at 1;
    # out(1,0): 1.0 @t2, .5+.125 @t3 -> never (IF fired at 3)
    for path in ("event", "dense"):
        res = hand_conv(leak=0.5, path=path).forward(TIMES, 4)
        np.testing.assert_array_equal(res.times, [[[NS, 1], [NS, NS]]])
        np.testing.assert_allclose(res.v_first[0, 0, 1], 1.0625)


def test_first_spike_pool_hand_worked():
    t = np.array([[[5, 3, NS, NS],
                   [4, 7, NS, 2],
                   [NS, NS, 1, 1],
                   [NS, NS, 0, 9]]], dtype=np.int32)
    np.testing.assert_array_equal(FirstSpikePool(2).forward(t, 10), [[[3, 2], [NS, 0]]])
    # padding 1, stride 2, kernel 2: windows start at -1
    np.testing.assert_array_equal(FirstSpikePool(2, 2, 1).forward(t, 10), [[[5, 3, NS], [4, 1, 1], [NS, 0, 9]]])


def test_pointwise_inhibition_hand_worked():
    t = np.array([[[2, 0]], [[1, 0]], [[1, NS]]], dtype=np.int32)      # 3 features, positions (0,0), (0,1)
    v = np.array([[[5.0, 1.0]], [[1.2, 1.0]], [[1.5, 0.0]]])
    removed = sk.pointwise_inhibition_(t, v)
    # (0,0): earliest t=1 by features 1 and 2, higher potential 1.5 -> feature 2
    # (0,1): t=0 tie with equal potential -> lower feature index 0
    np.testing.assert_array_equal(t[:, 0, 0], [NS, NS, 1])
    np.testing.assert_array_equal(t[:, 0, 1], [0, NS, NS])
    assert removed == 3 and v[0, 0, 0] == 0.0 and v[2, 0, 0] == 1.5


def test_k_winners_hand_worked():
    t = np.array([[[0, NS, 1, NS, 2]],
                  [[NS, 0, NS, NS, 0]]], dtype=np.int32)
    v = np.array([[[2.0, 0, 9.0, 0, 1.0]],
                  [[0, 3.0, 0, 0, 2.5]]])
    # t=0 candidates: (0,0,0) v2, (1,0,1) v3, (1,0,4) v2.5 -> (1,0,1) first; it removes feature 1 and
    # columns 0..2 of every feature; what is left is (0,0,4).
    w = sk.k_winners(t, v, 3, 1)
    np.testing.assert_array_equal(w, [[1, 0, 1], [0, 0, 4]])
    np.testing.assert_array_equal(sk.k_winners(t, v, 3, 0), [[1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(sk.k_winners(t, v, 1, 0), [[1, 0, 1]])


@pytest.mark.parametrize("seed", range(20))
def test_k_winners_constraints_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 5, (6, 12, 12)).astype(np.int32)
    t[rng.random(t.shape) < 0.7] = NS
    v = rng.uniform(1, 2, t.shape)
    k, r = int(rng.integers(1, 8)), int(rng.integers(0, 4))
    w = sk.k_winners(t, v, k, r)
    assert len(w) <= k
    assert len(set(w[:, 0])) == len(w)                        # one winner per feature map
    assert all(t[f, y, x] != NS for f, y, x in w)             # winners fired
    for i in range(len(w)):
        for j in range(i):
            assert max(abs(w[i, 1] - w[j, 1]), abs(w[i, 2] - w[j, 2])) > r
    if len(w):                                                # the first winner is the earliest spike
        assert t[tuple(w[0])] == t[t != NS].min()


def test_stdp_sign_and_magnitude_hand_worked():
    # 2x2 input -> one neuron; weights .5; V = .5 @t0, 1.0 @t1 > .9 -> t_post = 1
    conv = SpikingConv(1, 1, 2, 0.9, stdp=Stdp(a_plus=0.1, a_minus=-0.05, double_every=0, k=1))
    conv.weights[:] = 0.5
    t_in = np.array([[[0, 2], [NS, 1]]], dtype=np.int32)
    res = conv.forward(t_in, 4, learn=True)
    assert res.times[0, 0, 0] == 1
    np.testing.assert_array_equal(res.winners, [[0, 0, 0]])
    # t_pre <= t_post (0 and the simultaneous 1): +0.1*.5*.5; later (2) or silent: -0.05*.5*.5
    np.testing.assert_allclose(conv.weights[0, 0], [[0.525, 0.4875], [0.4875, 0.525]])
    # the stabiliser w(1-w) shrinks steps near the bounds
    conv.weights[:] = 0.9
    conv.forward(t_in, 4, learn=True)
    np.testing.assert_allclose(conv.weights[0, 0, 0, 0], 0.9 + 0.1 * 0.9 * 0.1)
    np.testing.assert_allclose(conv.weights[0, 0, 0, 1], 0.9 - 0.05 * 0.9 * 0.1)
    st = conv.stats()
    assert st["winners"] == 2 and st["learn_updates"] == 8 and st["n_learned"] == 2


def test_no_learning_without_winners_or_flag():
    conv = SpikingConv(1, 2, 2, 100.0)
    before = conv.weights.copy()
    conv.forward(TIMES, 4, learn=True)           # nobody reaches 100: no winner, no change
    conv.forward(TIMES, 4, learn=False)
    np.testing.assert_array_equal(conv.weights, before)
    assert conv.stats()["winners"] == 0


def test_learning_rate_schedule_doubles_to_cap():
    conv = SpikingConv(1, 1, 2, 0.1, stdp=Stdp(a_plus=0.01, a_minus=-0.0075, a_plus_max=0.03, double_every=2))
    rates = []
    for _ in range(6):
        conv.forward(TIMES, 4, learn=True)
        rates.append((conv.a_plus[0], conv.a_minus[0]))
    np.testing.assert_allclose([r[0] for r in rates], [0.01, 0.02, 0.02, 0.03, 0.03, 0.03])
    np.testing.assert_allclose([r[1] / r[0] for r in rates], -0.75)


def test_homeostasis_raises_thresholds_of_firing_features():
    conv = SpikingConv(1, 2, 2, 0.5, homeostasis_plus=0.2, homeostasis_decay=0.5, pointwise_inhibition=False)
    conv.forward(TIMES, 4, learn=True)
    np.testing.assert_allclose(conv.thresholds(), [0.7, 0.7])
    conv.forward(np.full((1, 3, 3), NS, np.int32), 4, learn=True)   # silent sample: decay only
    np.testing.assert_allclose(conv.thresholds(), [0.6, 0.6])


def test_convergence_decreases_on_stationary_stream():
    # Weights start at N(0.8, 0.05): C = mean w(1-w) first rises while depressed weights cross 0.5,
    # then falls steadily as every weight settles at 0 or 1 (paper, Fig. 5).
    rng = np.random.default_rng(3)
    sample = rng.integers(0, 10, (2, 16, 16)).astype(np.int32)
    sample[rng.random(sample.shape) < 0.5] = NS
    conv = SpikingConv(2, 4, 5, 8.0, padding=2, stdp=Stdp(a_plus=0.05, a_minus=-0.0375, double_every=0, k=4, radius=0))
    history = [conv.convergence()]
    for _ in range(25):
        for _ in range(10):
            conv.forward(sample, 10, learn=True)
        history.append(conv.convergence())
    peak = int(np.argmax(history))
    assert peak < 8, history
    after = history[peak:]
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:])), history
    assert history[-1] < 0.01 * history[0]
    assert conv.stats()["convergence"] == pytest.approx(history[-1])
    w = conv.weights
    assert ((w < 0.05) | (w > 0.95)).mean() > 0.95                 # binary receptive fields


def test_network_runs_trains_and_extracts_features():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(6):
        t = rng.integers(0, 30, (2, 24, 24)).astype(np.int32)
        t[rng.random(t.shape) < 0.6] = NS
        samples.append((t, 30))
    net = Network.kheradpisheh((2, 24, 24), conv1=6, conv2=8, threshold1=6.0, threshold2=3.0)
    out = net.forward(samples[0])
    assert out.times["conv1"].shape == (6, 24, 24) and out.times["pool1"].shape == (6, 12, 12)
    assert out.times["conv2"].shape == (8, 12, 12) and out.times["pool2"].shape == (8, 6, 6)
    # pool1 equals pooling conv1's output: layers compose
    np.testing.assert_array_equal(out.times["pool1"], sk.first_spike_pool(out.times["conv1"], 2, 2, 0))
    w2 = net.layer("conv2").weights.copy()
    hist = net.train_layer(samples, "conv1", epochs=2)
    assert len(hist) == 2 and net.layer("conv1").n_learned == 12
    np.testing.assert_array_equal(net.layer("conv2").weights, w2)          # other layer frozen
    net.train_layer(samples, "conv2")
    assert net.layer("conv2").n_learned == 6
    f = net.features(samples[1], grid=(2, 2))
    assert f.shape == (8 * 4,)
    assert f.sum() == (net.forward(samples[1]).times["pool2"] != NS).sum()
    fp = net.features(samples[1], grid=(3, 3), kind="potential")
    assert fp.shape == (8 * 9,) and (fp >= 0).all()
    ff = net.features(samples[1], kind="first")
    assert ff.shape == (8,) and ((ff >= 0) & (ff <= 1)).all()
    d = net.describe()
    assert [x["type"] for x in d] == ["conv", "pool", "conv", "pool"]
    assert d[2]["in_shape"] == (6, 12, 12) and d[2]["n_weights"] == 8 * 6 * 25
    assert set(d[0]) == {"name", "type", "in_shape", "out_shape", "kernel", "stride", "padding", "n_weights",
                         "threshold", "weight_bits"}


def test_learned_state_round_trip_and_errors(tmp_path):
    net = Network.kheradpisheh((2, 16, 16), conv1=4, conv2=5, threshold1=3.0, threshold2=2.0, seed=1)
    rng = np.random.default_rng(1)
    sample = rng.integers(0, 30, (2, 16, 16)).astype(np.int32)
    net.train_layer([(sample, 30)] * 5, "conv1")
    path = net.save(tmp_path / "w.npz", {"note": "round trip"})
    other = Network.kheradpisheh((2, 16, 16), conv1=4, conv2=5, threshold1=3.0, threshold2=2.0, seed=99)
    meta = other.load(path)
    assert meta["note"] == "round trip" and meta["layers"][0]["name"] == "conv1"
    for a, b in zip(net.conv_layers, other.conv_layers):
        for key, val in a.state().items():
            np.testing.assert_array_equal(b.state()[key], val)
    np.testing.assert_array_equal(net.forward((sample, 30)).times["pool2"], other.forward((sample, 30)).times["pool2"])

    wrong = Network.kheradpisheh((2, 16, 16), conv1=7, conv2=5)
    with pytest.raises(ModelError, match=r"w\.npz: conv1/weights: shape"):
        wrong.load(path)
    layers, meta = load_state(path)
    del layers["conv2"]["a_plus"]
    save_state(tmp_path / "partial.npz", layers, meta)
    with pytest.raises(ModelError, match=r"partial\.npz: conv2/a_plus: key missing"):
        other.load(tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ModelError, match=r"junk\.npz: not a learned-state"):
        other.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(ModelError, match=r"foreign\.npz: key '__meta__' missing"):
        other.load(tmp_path / "foreign.npz")
    with pytest.raises(ModelError, match=r"nothere\.npz: no such"):
        other.load(tmp_path / "nothere.npz")


# -- nodes -------------------------------------------------------------------------------------

def spikes_packet(times, t0_us=1_000, step_us=100, T=4, seq=0):
    ev = events_from_times(times, t0_us, step_us)
    c, h, w = times.shape
    return Packet(kind="spikes", stream="enc.spikes_out", seq=seq, sensor_size=SensorSize(w, h, c), t0_us=t0_us,
                  t1_us=t0_us + T * step_us, sent_ns=123, events=ev,
                  data={"time_steps": T, "step_us": step_us, "t_start_us": t0_us})


def make_conv_node(**params):
    node = SpikingConvNode("conv1", build_params(SpikingConvNode, {"out_channels": 1, "kernel": 2, "padding": 0,
                                                                   "threshold": 1.0, **params}))
    meta = node.setup({"spikes_in": PortMeta("spikes", SensorSize(3, 3, 1))})
    node.layer.weights = W.copy()
    return node, meta


def test_conv_node_emits_the_hand_worked_spikes():
    node, meta = make_conv_node()
    assert meta["spikes_out"] == PortMeta("spikes", SensorSize(2, 2, 1))
    out = node.process("spikes_in", spikes_packet(TIMES))["spikes_out"]
    assert len(out) == 1
    pk = out[0]
    assert pk.kind == "spikes" and pk.sensor_size == SensorSize(2, 2, 1) and pk.sent_ns == 123
    assert pk.data["layer"] == "conv1" and pk.data["time_steps"] == 4
    # spikes at steps 1, 1, 3 -> t = 1000 + step*100, p = feature, x/y = output position
    assert pk.events.tolist() == [(1100, 0, 0, 0), (1100, 1, 0, 0), (1300, 0, 1, 0)]
    d = node.describe()
    assert d["name"] == "conv1" and d["out_shape"] == (1, 2, 2) and d["in_shape"] == (1, 3, 3)
    st = node.stats()
    assert st["spikes_in"] == 6 and st["spikes_out"] == 3 and "convergence" in st


def test_conv_node_learns_live_and_state_round_trips():
    node, _ = make_conv_node(learn=True, a_plus=0.1, a_minus=-0.05, double_every=0, k_winners=1)
    before = node.layer.weights.copy()
    out = node.process("spikes_in", spikes_packet(TIMES))["spikes_out"][0]
    assert out.data["winners"] == [[0, 0, 0]]                   # earliest spike (t=1), higher potential 1.5
    assert not np.array_equal(node.layer.weights, before)
    state = node.state()
    fresh, _ = make_conv_node()
    fresh.load_state(state)
    np.testing.assert_array_equal(fresh.layer.weights, node.layer.weights)
    assert fresh.stats()["n_learned"] == 1
    with pytest.raises(ModelError, match="conv1/weights: shape"):
        fresh.load_state({**state, "weights": np.zeros((2, 1, 2, 2))})
    node.configure(learn=False)
    w = node.layer.weights.copy()
    node.process("spikes_in", spikes_packet(TIMES, seq=1))
    np.testing.assert_array_equal(node.layer.weights, w)


def test_pool_node_and_geometry_errors():
    node = FirstSpikePoolNode("pool1", build_params(FirstSpikePoolNode, {"kernel": 2}))
    meta = node.setup({"spikes_in": PortMeta("spikes", SensorSize(4, 4, 1))})
    assert meta["spikes_out"].sensor_size == SensorSize(2, 2, 1)
    t = np.array([[[5, 3, NS, NS], [4, 7, NS, 2], [NS, NS, 1, 1], [NS, NS, 0, 3]]], dtype=np.int32)
    pk = node.process("spikes_in", spikes_packet(t, T=10))["spikes_out"][0]
    assert sorted(pk.events.tolist()) == [(1000, 1, 1, 0), (1200, 1, 0, 0), (1300, 0, 0, 0)]
    assert node.describe()["type"] == "pool"
    bad = SpikingConvNode("c", build_params(SpikingConvNode, {"kernel": 9, "padding": 0}))
    with pytest.raises(GraphError, match=r"nodes\.c\.params.*smaller than kernel"):
        bad.setup({"spikes_in": PortMeta("spikes", SensorSize(4, 4, 2))})


def test_node_falls_back_to_params_without_timing_data():
    node, _ = make_conv_node(time_steps=4, step_us=100)
    ev = make_events([1000, 1100, 1200, 1000, 1300, 1100], [0, 1, 0, 2, 1, 2], [0, 0, 1, 1, 2, 2], [0] * 6)
    pk = Packet(kind="spikes", stream="x", sensor_size=SensorSize(3, 3, 1), t0_us=1000, t1_us=1400, events=ev)
    out = node.process("spikes_in", pk)["spikes_out"][0]
    assert out.events.tolist() == [(1100, 0, 0, 0), (1100, 1, 0, 0), (1300, 0, 1, 0)]


GRAPH = """
[graph]
name = "spiking"

[nodes.src]
type = "replay"
params = { path = "gesture_04_right_arm_clockwise_s0.sfe", window_us = 10000, speed = 0 }

[nodes.enc]
type = "polarity_encoder"
inputs = { events_in = "src.events_out" }
params = { window_us = 50000, time_steps = 20, downsample = 2 }

[nodes.conv1]
type = "snn_conv"
inputs = { spikes_in = "enc.spikes_out" }
params = { out_channels = 8, kernel = 5, padding = 2, threshold = 6.0, learn = true, k_winners = 3, inhibition_radius = 2 }

[nodes.pool1]
type = "snn_pool"
inputs = { spikes_in = "conv1.spikes_out" }
params = { kernel = 2 }
"""


def test_graph_file_builds_and_streams_a_recording_through_the_nodes():
    from spikeflow.service.graph import load_graph, resolve_metas

    spec = load_graph(GRAPH)
    metas, nodes = resolve_metas(spec)
    assert metas[("enc", "spikes_out")] == PortMeta("spikes", SensorSize(64, 64, 2))
    assert metas[("conv1", "spikes_out")] == PortMeta("spikes", SensorSize(64, 64, 8))
    assert metas[("pool1", "spikes_out")] == PortMeta("spikes", SensorSize(32, 32, 8))
    # operator chaining by hand: what one worker does with these nodes
    outs = []
    for _, pk in nodes["src"].packets():
        for sp in nodes["enc"].process("events_in", pk).get("spikes_out", []):
            for c in nodes["conv1"].process("spikes_in", sp)["spikes_out"]:
                outs += nodes["pool1"].process("spikes_in", c)["spikes_out"]
    for sp in nodes["enc"].flush().get("spikes_out", []):
        for c in nodes["conv1"].process("spikes_in", sp)["spikes_out"]:
            outs += nodes["pool1"].process("spikes_in", c)["spikes_out"]
    enc, conv = nodes["enc"].stats(), nodes["conv1"].stats()
    assert enc["windows"] == len(outs) > 5
    assert conv["samples"] == len(outs) and conv["n_learned"] == len(outs) and conv["learn_updates"] > 0
    assert conv["spikes_in"] == enc["spikes_out"]
    assert sum(p.count for p in outs) == nodes["pool1"].stats()["spikes_out"] > 0
    assert [p.seq for p in outs] == list(range(len(outs)))
    for p in outs:
        assert p.data["layer"] == "pool1" and p.sensor_size == SensorSize(32, 32, 8)
        assert p.events["p"].max() < 8 and p.events["x"].max() < 32
        assert ((p.events["t"] - p.data["t_start_us"]) % p.data["step_us"] == 0).all()
    assert 0 < conv["winners"] <= 3 * len(outs)


@pytest.mark.parametrize("leak", [1.0, 0.9])
@pytest.mark.parametrize("path", ["event", "auto"])
def test_sparse_forward_equals_dense_forward_while_learning(leak, path):
    # the streaming nodes chain sparse samples: same spikes, winners, weights, schedules and counters
    # as the dense-map layer API, sample after sample with STDP and homeostasis on both conv layers
    rng = np.random.default_rng(3)

    def build():
        kw = dict(leak=leak, path=path, homeostasis_plus=0.5, homeostasis_decay=0.9)
        return [SpikingConv(2, 12, 3, 3.0, padding=1, stdp=Stdp(k=3, radius=1, double_every=2), name="c1", **kw),
                FirstSpikePool(2, name="p1"),
                SpikingConv(12, 9, 3, 2.0, padding=1, stdp=Stdp(k=2, radius=0, double_every=3), seed=4, name="c2", **kw),
                FirstSpikePool(2, name="p2")]

    dense, sparse = build(), build()
    for i in range(8):
        x = rng.integers(0, 6, (2, 16, 16)).astype(np.int32)
        x[rng.random(x.shape) > (0.1 if i % 3 else 0.5)] = NO_SPIKE  # some samples take auto's dense kernel
        t, sample = x, sk.spikes_by_step(x, 6)
        for a, b in zip(dense, sparse):
            shape = t.shape
            if isinstance(a, SpikingConv):
                res = a.forward(t, 6, learn=True, potentials=False)
                t = res.times
                o, st, winners = b.forward_sparse(*sample, shape[1:], 6, learn=True)
                np.testing.assert_array_equal(winners, res.winners)
            else:
                t = a.forward(t, 6)
                o, st = b.forward_sparse(*sample, shape, 6)
            np.testing.assert_array_equal(sk.sparse_to_times(o, st, *t.shape, 6), t)
            sample = (o, st)
    for a, b in zip(dense, sparse):
        assert a.stats() == b.stats()
        if isinstance(a, SpikingConv):
            np.testing.assert_array_equal(a.weights, b.weights)
            np.testing.assert_array_equal(a.theta_adapt, b.theta_adapt)
