"""Counting and charging: hand-computed energy/latency, kernel twin, properties, real traffic, fixed point."""

from __future__ import annotations

import numpy as np
import pytest

import naive_loihi as naive
from spikeflow.nodes import loihi_kernels as K
from spikeflow.nodes.loihi_costs import load_profile
from spikeflow.nodes.loihi_mapping import LayerSpec, map_network
from spikeflow.nodes.loihi_model import fixed_point_report, quantise_weights, run_traffic
from spikeflow.service.errors import ModelError
from spikeflow.service.events import EVENT_DTYPE, make_events

DAVIES = load_profile("davies2018")
SANAFE = load_profile("sanafe_loihi")


def spec(name, typ, in_shape, out_shape, **kw):
    return LayerSpec.from_describe({"name": name, "type": typ, "in_shape": in_shape, "out_shape": out_shape, **kw})


def tiny(learn=False):
    return map_network([spec("in", "input", (1, 4, 4), (1, 4, 4)),
                        spec("c1", "conv", (1, 4, 4), (2, 3, 3), kernel=(2, 2), learn=learn),
                        spec("p1", "pool", (2, 3, 3), (2, 1, 1), kernel=(3, 3), stride=3)])


def tiny_traffic():
    # step 0: input (1,1) and (0,0); conv1 feature 1 at (0,0). step 1: input (2,2). 1 ms timesteps.
    return {"in": make_events([0, 10, 1500], [1, 0, 2], [1, 0, 2], [0, 0, 0]),
            "c1": make_events([20], [0], [0], [1])}


def test_tiny_network_counts_by_hand():
    res, _ = run_traffic(tiny(), DAVIES, tiny_traffic(), 1000, 0, 2000)
    c = res.counts
    # in(1,1) reaches conv rows/cols 0..1 x 2 maps = 8; in(0,0) reaches (0,0) x 2 = 2; in(2,2) rows/cols 1..2 = 8;
    # conv1 (1,0,0) reaches pool feature 1 = 1
    assert c["syn_ops"] == 19
    assert c["active"] == 8 + 8 + 1
    assert c["inactive"] == 2 * 20 - 17
    assert (c["spikes_out"], c["msgs_out"], c["msgs_in"], c["host_msgs"]) == (1, 1, 4, 3)
    assert (c["within_tile"], c["hops_ew"], c["hops_ns"]) == (4, 0, 0)   # both cores on tile (0, 0)
    assert c["syn_updates"] == 0 and c["timesteps"] == 2


def test_tiny_network_energy_and_latency_davies():
    res, _ = run_traffic(tiny(), DAVIES, tiny_traffic(), 1000, 0, 2000)
    e = res.energy_pj
    assert e["syn_spike"] == pytest.approx(19 * 23.6)
    assert e["neuron_active"] == pytest.approx(17 * 81.0)
    assert e["neuron_inactive"] == pytest.approx(23 * 52.0)
    assert e["within_tile"] == pytest.approx(4 * 1.7)
    assert res.energy_uj == pytest.approx(3028.2e-6)
    # step 0: conv core 10 syn x 3.5 + 8 active x 8.4 + 10 inactive x 5.3 = 155.2 ns (> pool core 17.2)
    # step 1: 8 x 3.5 + 8 x 8.4 + 10 x 5.3 = 148.2 ns; route 2.1 ns (within tile); barrier 113 ns (1 tile)
    assert res.core_time_ns.tolist() == pytest.approx([155.2, 148.2])
    assert res.latency_ns == pytest.approx(155.2 + 148.2 + 2 * 2.1 + 2 * 113.0)
    d = res.as_dict()
    assert d["latency_ms"] == pytest.approx(533.6e-6)
    assert d["power_mw"] == pytest.approx(3028.2e-12 / 533.6e-9 * 1e3)
    assert d["edp_uj_ms"] == pytest.approx(3028.2e-6 * 533.6e-6)


def test_tiny_network_sanafe_and_static_power():
    res, _ = run_traffic(tiny(), SANAFE, tiny_traffic(), 1000, 0, 2000)
    # conv/pool synapses 24.0 pJ; active 72.8, inactive 51.2; spike out 69.3; axon out 111; axon in 0; tile 1.7
    assert res.energy_uj * 1e6 == pytest.approx(19 * 24.0 + 17 * 72.8 + 23 * 51.2 + 69.3 + 111.0 + 4 * 1.7)
    # step 0 conv core: 10 x 3.1 + 8 x 9.7 + 10 x 6.0 + 1 spike x 30 + 1 msg out x 5.1 + 2 msgs in x 20
    # step 1 conv core: 8 x 3.1 + 8 x 9.7 + 10 x 6.0 + 1 msg in x 20
    assert res.core_time_ns.tolist() == pytest.approx([243.7, 182.4])
    assert res.latency_ns == pytest.approx(243.7 + 182.4 + 2 * 2.1 + 2 * 113.0)
    hot = DAVIES.with_static_mw(10.0)
    r2, _ = run_traffic(tiny(), hot, tiny_traffic(), 1000, 0, 2000)
    assert r2.energy_pj["static"] == pytest.approx(10e-3 * 533.6e-9 * 1e12)
    assert r2.dynamic_pj == pytest.approx(3028.2)


def test_stdp_updates_count_fan_in_of_each_learning_spike():
    res, _ = run_traffic(tiny(learn=True), DAVIES, tiny_traffic(), 1000, 0, 2000)
    assert res.counts["syn_updates"] == 4                  # conv neuron fan-in 1 x 2 x 2
    assert res.energy_pj["syn_update"] == pytest.approx(4 * 120.0)
    assert res.core_time_ns[0] == pytest.approx(155.2 + 4 * 6.1)


def test_hops_follow_x_then_y_routing():
    # one neuron on core 0 (tile 0,0) fanning out to 41 cores 1..41: tile k // 4 at (tile % 8, tile // 8)
    m = map_network([spec("in", "input", (1, 1, 1), (1, 1, 1)), spec("a", "dense", (1, 1, 1), (1, 1, 1)),
                     spec("b", "dense", (1, 1, 1), (41 * 1024, 1, 1))])
    assert m.n_cores == 42
    res, _ = run_traffic(m, DAVIES, {"a": make_events([0], [0], [0], [0])}, 1000, 0, 1000)
    tiles = np.arange(1, 42) // 4
    tx, ty = tiles % 8, tiles // 8
    c = res.counts
    assert c["msgs_out"] == 41 and c["within_tile"] == 3
    assert c["hops_ew"] == int(tx.sum()) and c["hops_ns"] == int(ty.sum())
    assert res.route_ns[0] == pytest.approx(max(tx * 4.1 + ty * 6.5))
    assert res.energy_pj["hop_ew"] == pytest.approx(tx.sum() * 3.0)
    assert res.energy_pj["hop_ns"] == pytest.approx(ty.sum() * 4.0)
    assert res.barrier_ns == pytest.approx(113.0 + (11 - 1) / 31 * 352.0)   # 42 cores = 11 tiles


GEOMETRIES = [(1, 5, 5, 2, 3, 3, 1, 0, 0), (2, 6, 7, 3, 3, 2, 1, 1, 0), (3, 8, 8, 3, 2, 2, 2, 0, 1),
              (2, 9, 6, 4, 5, 3, 2, 2, 0)]


@pytest.mark.parametrize("gi", range(len(GEOMETRIES)))
@pytest.mark.parametrize("seed", range(3))
def test_count_kernel_matches_naive_on_random_traffic(gi, seed):
    in_c, in_h, in_w, out_c, kh, kw, s, pad, pool = GEOMETRIES[gi]
    out_c = in_c if pool else out_c
    out_h, out_w = (in_h + 2 * pad - kh) // s + 1, (in_w + 2 * pad - kw) // s + 1
    g = np.array([in_c, in_h, in_w, out_c, out_h, out_w, kh, kw, s, pad, pool], np.int64)
    rng = np.random.default_rng(seed)
    n_out, n_in = out_c * out_h * out_w, in_c * in_h * in_w
    cuts = np.sort(rng.choice(np.arange(1, n_out), size=min(n_out - 1, 5), replace=False))
    bounds = np.concatenate([[0], cuts, [n_out]]).astype(np.int64)
    n_cores = len(bounds) - 1
    dst_tx, dst_ty = rng.integers(0, 8, n_cores), rng.integers(0, 4, n_cores)
    n_spk, n_rows, row0 = 60, 5, 7
    step = np.sort(rng.integers(row0, row0 + n_rows, n_spk))
    nid = rng.integers(0, n_in, n_spk)
    sx, sy = rng.integers(0, 8, n_spk), rng.integers(0, 4, n_spk)
    got = {"syn_ops": np.zeros((n_rows, n_cores), np.int64)}
    got["active"], got["msgs_in"] = np.zeros_like(got["syn_ops"]), np.zeros_like(got["syn_ops"])
    got["msgs_per_spike"] = np.zeros(n_spk, np.int64)
    for k in ("hops_ew", "hops_ns", "within_tile"):
        got[k] = np.zeros(n_rows, np.int64)
    got["route_max_ns"] = np.zeros(n_rows)
    last = np.full(n_out, -1, np.int64)
    K.count_traffic_(step, row0, nid, sx, sy, g, bounds, dst_tx, dst_ty, 4.1, 6.5, 2.1, last, got["syn_ops"],
                     got["active"], got["msgs_in"], got["msgs_per_spike"], got["hops_ew"], got["hops_ns"],
                     got["within_tile"], got["route_max_ns"])
    want = naive.count_traffic(step, row0, nid, sx, sy, g, bounds, dst_tx, dst_ty, 4.1, 6.5, 2.1, n_rows)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, err_msg=k)


def kheradpisheh_traffic(shared, n_files=1, bits=2):
    from spikeflow.drivers.recording import read_recording
    from spikeflow.nodes.snn import Network, events_from_times
    from spikeflow.service.cli_loihi_report import encode_events, specs_of

    net = Network.kheradpisheh((2, 34, 34))
    mapping = map_network(specs_of(net), bits)
    out = []
    for i in range(1, n_files + 1):
        ev, _ = read_recording(shared(f"recordings/slayer-nmnist/{i}.bs2"))
        t0 = int(ev["t"][0])
        step_us = -(-(int(ev["t"][-1]) - t0 + 1) // 30)
        times = encode_events(ev, (2, 34, 34), t0, step_us, 30, "x")
        res = net.forward((times, 30))
        spikes = {"input": events_from_times(times, t0, step_us)}
        spikes.update({n: events_from_times(t, t0, step_us) for n, t in res.times.items()})
        out.append((spikes, t0, step_us, times, res))
    return net, mapping, out


def test_real_traffic_matches_an_independent_dense_count(shared):
    """N-MNIST through the real Kheradpisheh layers: synaptic ops and active neurons of conv1
    equal a dense sliding-window count of the input spikes per timestep."""
    net, mapping, [(spikes, t0, step_us, times, _)] = kheradpisheh_traffic(shared)
    res, counter = run_traffic(mapping, DAVIES, {"input": spikes["input"]}, step_us, t0, t0 + 30 * step_us)
    win = np.lib.stride_tricks.sliding_window_view
    syn, active = 0, 0
    for st in range(30):
        fired = (times == st).sum(axis=0)                           # (34, 34) input spikes this step, both channels
        per_pos = win(np.pad(fired, 2), (5, 5)).sum(axis=(2, 3))     # sources reaching each conv1 position
        syn += int(per_pos.sum()) * 30
        active += int((per_pos > 0).sum()) * 30
    assert res.counts["syn_ops"] == syn and res.counts["active"] == active
    assert counter.spikes_seen["input"] == int((times < 30).sum())


def test_energy_linear_in_spike_count_at_fixed_mapping(shared):
    net, mapping, [(spikes, t0, step_us, _, _)] = kheradpisheh_traffic(shared)
    one_step = {k: v[(v["t"] - t0) // step_us == 5] for k, v in spikes.items()}   # the spikes of step 5
    n_steps = 12

    def energy(k):
        sp = {}
        for name, ev in one_step.items():   # the same spikes repeated in k different timesteps
            reps = [ev.copy() for _ in range(k)]
            for j, r in enumerate(reps):
                r["t"] = t0 + j * step_us
            sp[name] = np.concatenate(reps) if reps else np.zeros(0, EVENT_DTYPE)
        return run_traffic(mapping, DAVIES, sp, step_us, t0, t0 + n_steps * step_us)[0].energy_uj

    e0, e1 = energy(0), energy(1)
    assert e1 > e0
    for k in (2, 5, 12):
        assert energy(k) - e0 == pytest.approx(k * (e1 - e0), rel=1e-9)


@pytest.mark.parametrize("profile", [DAVIES, SANAFE])
def test_latency_non_decreasing_with_load(shared, profile):
    net, mapping, [(spikes, t0, step_us, _, _)] = kheradpisheh_traffic(shared)
    rng = np.random.default_rng(0)
    keep = {k: rng.random(len(v)) for k, v in spikes.items()}
    last = -1.0
    for frac in (0.0, 0.1, 0.3, 0.6, 1.0):      # nested subsets of the real traffic
        sub = {k: v[keep[k] < frac] for k, v in spikes.items()}
        lat = run_traffic(mapping, profile, sub, step_us, t0, t0 + 30 * step_us)[0].latency_ns
        assert lat >= last
        last = lat


def test_counter_rejects_spikes_outside_the_layer_grid():
    with pytest.raises(ModelError, match="layer c1: spike 0 .*outside"):
        run_traffic(tiny(), DAVIES, {"c1": make_events([0], [3], [0], [0])}, 1000, 0, 1000)
    with pytest.raises(ModelError, match="unknown layer 'zz'"):
        run_traffic(tiny(), DAVIES, {"zz": make_events([0], [0], [0], [0])}, 1000, 0, 1000)
    _, counter = run_traffic(tiny(), DAVIES, {"in": make_events([0, 5000], [0, 0], [0, 0], [0, 0])}, 1000, 0, 1000)
    assert counter.dropped == 1


def test_quantise_weights_grid():
    w = np.array([0.0, 0.1, 0.5, 0.74, 1.0])
    q = quantise_weights(w, 2)                       # 3 levels of 1/3 above 0
    assert np.allclose(q * 3, np.round(q * 3)) and q.max() == 1.0
    assert quantise_weights(w, 9).max() == pytest.approx(1.0)
    assert np.abs(quantise_weights(w, 9) - w).max() <= 0.5 / 511 + 1e-7
    s = quantise_weights(np.array([-1.0, -0.3, 0.2, 1.0]), 3)     # signed: 3 levels per side
    assert np.allclose(s * 3, np.round(s * 3))
    assert np.array_equal(quantise_weights(np.zeros(3), 4), np.zeros(3))
    with pytest.raises(ModelError, match="weight_bits"):
        quantise_weights(w, 0)


def test_fixed_point_report_on_the_real_network(shared):
    """Float vs fixed-point weights on real N-MNIST: output spikes and accuracy of a fixed readout."""
    from sklearn.neighbors import NearestCentroid

    from spikeflow.drivers.recording import read_recording
    from spikeflow.nodes.snn import Network
    from spikeflow.service.cli_loihi_report import encode_events

    labels = {}
    for line in shared("recordings/slayer-nmnist/train1K.txt").read_text().splitlines()[1:]:
        i, c = line.split()
        labels[int(i)] = int(c)
    ids = list(range(1, 41))
    samples = []
    for i in ids:
        ev, _ = read_recording(shared(f"recordings/slayer-nmnist/{i}.bs2"))
        t0 = int(ev["t"][0])
        step = -(-(int(ev["t"][-1]) - t0 + 1) // 20)
        samples.append((encode_events(ev, (2, 34, 34), t0, step, 20, str(i)), 20))
    net = Network.kheradpisheh((2, 34, 34), conv1=8, conv2=16, threshold1=6.0, threshold2=4.0)
    conv = {c.name: c for c in net.conv_layers}
    y = np.array([labels[i] for i in ids])
    feats = np.array([net.features(s, grid=(2, 2)) for s in samples])
    clf = NearestCentroid().fit(feats[:25], y[:25])

    def run(weights):
        for n, c in conv.items():
            c.weights = np.asarray(weights[n], dtype=np.float64)
        spikes = {}
        f = []
        for s in samples[25:]:
            out = net.forward(s)
            for n, t in out.times.items():
                spikes[n] = spikes.get(n, 0) + int((t < 20).sum())
            f.append(net.features(s, grid=(2, 2)))
        return {"spikes": spikes, "predictions": clf.predict(np.array(f)), "labels": y[25:]}

    weights = {n: c.weights.copy() for n, c in conv.items()}
    rep9 = fixed_point_report(run, weights, 9)
    rep1 = fixed_point_report(run, weights, 1)
    for n, c in conv.items():
        c.weights = weights[n]
    assert set(rep9["layers"]) == {"conv1", "pool1", "conv2", "pool2"}
    assert rep9["accuracy_float"] == rep1["accuracy_float"] > 0.2     # better than chance (0.1)
    assert abs(rep9["accuracy_change"]) <= 0.2 and rep9["prediction_agreement"] >= 0.8
    assert max(abs(v["relative_change"]) for v in rep9["layers"].values()) < 0.05
    assert rep9["max_abs_weight_error"]["conv1"] <= 0.5 / 511 * 1.0 + 1e-6
    # 1 bit: every weight snaps to 0 or the layer maximum, so the spikes change a lot more
    assert max(abs(v["relative_change"]) for v in rep1["layers"].values()) > \
        max(abs(v["relative_change"]) for v in rep9["layers"].values())


def test_report_counts_stdp_updates_of_a_learning_layer(shared):
    """--learn conv1: every conv1 spike updates its neuron's whole (border-clipped) fan-in."""
    from spikeflow.drivers.recording import read_recording
    from spikeflow.nodes.snn import Network
    from spikeflow.service.cli_loihi_report import polarity_samples, report_network, specs_of

    net = Network.kheradpisheh((2, 34, 34))
    ev, _ = read_recording(shared("recordings/slayer-nmnist/4.bs2"))
    samples = polarity_samples("4", ev, (2, 34, 34), 30)
    rep = report_network(net, samples, DAVIES, 2, learn=("conv1",), repeats=1)
    _, t0, step, T, times = samples[0]
    t1 = net.forward((times, T)).times["conv1"]
    c, y, x = (t1 < T).nonzero()
    fan_in = specs_of(net)[1].fan_in()
    want = int(fan_in[(y * 34 + x) * 30 + c].sum())
    inf = rep["inferences"][0]
    assert inf["counts"]["syn_updates"] == want > 0
    assert inf["energy_by_op_uj"]["syn_update"] == pytest.approx(want * 120.0e-6)
