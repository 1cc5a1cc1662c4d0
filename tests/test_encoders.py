"""Encoders: DoG kernels, rank-order latency, static images (ETH-80 PNGs), the dog_encoder and
polarity_encoder nodes on real DVS128 Gesture recordings and on hand-made events."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tonic.io

import naive
from spikeflow.nodes import encoder_kernels as ek
from spikeflow.nodes.base import PortMeta, build_params
from spikeflow.nodes.encoders import (DogEncoder, EventEncoder, ImageEncoder, PolarityEncoder, _Windows, dog_bank,
                                      dog_kernel, dog_latency, encode_image, event_map, polarity_times)
from spikeflow.nodes.snn import NO_SPIKE, Network
from spikeflow.service.errors import ParamError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, as_events, make_events, time_slice
from spikeflow.service.packet import Packet

NS = NO_SPIKE
TONIC_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])


def gesture(shared, n: int) -> np.ndarray:
    """A DVS128 Gesture clip decoded by tonic (the reference decoder), in our dtype."""
    return as_events(tonic.io.read_mnist_file(str(shared(f"recordings/slayer-dvsgesture/{n}.bs2")), dtype=TONIC_DTYPE))


def packets(events, chunk_us, sensor=SensorSize(128, 128, 2)):
    """Cut a recording into consecutive events packets of ``chunk_us`` (as a replay source does)."""
    t_end = int(events["t"][-1]) + 1
    for i, t0 in enumerate(range(0, t_end, chunk_us)):
        yield Packet(kind="events", stream="src.events_out", seq=i, sensor_size=sensor, t0_us=t0,
                     t1_us=min(t0 + chunk_us, t_end), sent_ns=i, events=time_slice(events, t0, t0 + chunk_us))


def run_node(node, events, chunk_us):
    out = []
    for pk in packets(events, chunk_us):
        out += node.process("events_in", pk).get("spikes_out", [])
    out += node.flush().get("spikes_out", [])
    return out


def make_node(cls, sensor=SensorSize(128, 128, 2), **params):
    node = cls("enc", build_params(cls, params))
    meta = node.setup({"events_in": PortMeta("events", sensor)})
    return node, meta


# -- kernels and plain functions -------------------------------------------------------------

def test_dog_kernels_are_zero_mean_normalised_on_and_off():
    on, off = dog_bank()
    assert on.shape == off.shape == (7, 7)
    for k in (on, off):
        assert abs(k.mean()) < 1e-12 and k.max() == pytest.approx(1.0)
        np.testing.assert_allclose(k, k.T)
        np.testing.assert_allclose(k, k[::-1, ::-1])
    assert on[3, 3] == 1.0 and off[3, 3] < 0 and on[0, 3] < 0 < off[0, 3]
    np.testing.assert_allclose(on, naive.dog_kernel(7, 1, 2))
    np.testing.assert_allclose(dog_kernel(5, 2.0, 1.0), naive.dog_kernel(5, 2, 1))
    with pytest.raises(ValueError, match="odd"):
        dog_kernel(6)


def test_rank_latency_hand_worked():
    identity = np.ones((2, 1, 1))            # 1x1 "DoG": the intensity passes through
    img = np.array([[3.0, 1.0], [2.0, 0.0]])
    np.testing.assert_array_equal(dog_latency(img, 3, identity[:1])[0], [[0, 2], [1, NS]])
    # T=2: bins of 3//2 = 1 value -> the weakest non-zero value falls beyond the last bin
    np.testing.assert_array_equal(dog_latency(img, 2, identity[:1])[0], [[0, NS], [1, NS]])
    # ranks are over all channels together: 6 values in 3 steps, two per bin (ties by channel, position)
    np.testing.assert_array_equal(dog_latency(img, 3, identity), [[[0, 2], [1, NS]], [[0, 2], [1, NS]]])
    # 6 values in T=3 steps: two per bin, ties broken by position
    img2 = np.array([[6.0, 5.0, 4.0], [4.0, 2.0, 1.0]])
    np.testing.assert_array_equal(dog_latency(img2, 3, identity[:1]), [[[0, 0, 1], [1, 2, 2]]])
    # threshold: responses at or below it never spike
    np.testing.assert_array_equal(dog_latency(img2, 3, identity[:1], threshold=4.0), [[[0, 1, NS], [NS, NS, NS]]])


def test_bright_square_gives_on_inside_edges_off_outside():
    img = np.zeros((32, 32))
    img[10:22, 10:22] = 255.0
    t, T = encode_image(img, time_steps=10)
    assert T == 10 and t.shape == (2, 32, 32) and t.dtype == np.int32
    on, off = t[0] != NS, t[1] != NS
    assert on[10:22, 10:22].sum() > 0 and on[:8].sum() == 0          # on-centre fires on the bright side
    assert off[7:10, 10:22].sum() > 0                                 # off-centre just outside the edge
    assert off[13:19, 13:19].sum() == 0 and on[13:19, 13:19].sum() == 0  # uniform interior: exactly silent
    resp = naive.filter2d(img, dog_bank())                            # rank order: stronger fires earlier
    for step in range(T - 1):
        assert resp[t == step].min() >= resp[t == step + 1].max() - 1e-9
    counts = np.bincount(t[t != NS], minlength=10)
    assert counts.max() - counts.min() <= 1 or counts[:-1].std() == 0  # equal-count bins


def test_eth80_images_through_the_paper_pipeline(shared):
    import matplotlib.image as mpimg

    paths = [shared(f"images/eth80-cup-dog/{c}/{c}{i}-000-000.png") for c in ("cup", "dog") for i in (1, 2)]
    enc = ImageEncoder(time_steps=15, threshold=0.1, normalization_radius=8)
    net = Network.kheradpisheh((2, 64, 64), encoder=enc, conv1=4, conv2=6, threshold1=8.0, threshold2=2.0)
    feats = []
    for p in paths:
        img = mpimg.imread(p)
        t, T = enc(img)
        assert t.shape == (2, 64, 64) and T == 15
        n = (t != NS).sum()
        assert 50 < n < 2 * 64 * 64 and t[t != NS].max() <= 14
        # static frames and the numba encoder agree with the slow twin on a real image
        gray = img[..., :3].mean(axis=2) if img.ndim == 3 else img
        resp = naive.filter2d(gray, dog_bank())
        resp[resp <= 0.1] = 0
        np.testing.assert_array_equal(t, naive.rank_latency(naive.local_normalize(resp, 8), 15))
        feats.append(net.features(img, grid=(2, 2)))
    assert all(f.shape == (24,) for f in feats)
    net.train_layer(paths and [mpimg.imread(p) for p in paths], "conv1")
    assert net.layer("conv1").stats()["winners"] > 0


def test_event_maps_hand_worked():
    ev = make_events([0, 10, 20, 30], [1, 1, 2, 3], [0, 0, 1, 1], [1, 0, 1, 1])
    np.testing.assert_array_equal(event_map(ev, 2, 4), [[0, 2, 0, 0], [0, 0, 1, 1]])
    ts = event_map(ev, 2, 4, "time_surface", t_ref_us=40, tau_us=10.0)
    np.testing.assert_allclose(ts, [[0, math.exp(-3), 0, 0], [0, 0, math.exp(-2), math.exp(-1)]])
    np.testing.assert_array_equal(event_map(ev, 1, 2, downsample=2), [[2, 2]])
    with pytest.raises(ValueError, match="unknown map mode"):
        event_map(ev, 2, 4, "nope")


def test_polarity_times_hand_worked():
    ev = make_events([100, 150, 180, 300, 420, 999], [0, 0, 3, 1, 2, 2], [0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1])
    t = polarity_times(ev, 2, 2, 4, t_start_us=100, step_us=100, time_steps=5)
    # first event per (p, y, x): ON (0,0)@100 -> 0; OFF (1,3)@180 -> 0; OFF (1,1)@300 -> 2; ON (0,2)@420 -> 3;
    # the event at 999 is at step 8 >= T: dropped
    np.testing.assert_array_equal(t, [[[NS, NS, NS, NS], [NS, 2, NS, 0]], [[0, NS, 3, NS], [NS, NS, NS, NS]]])
    t2 = polarity_times(ev, 2, 1, 2, 100, 100, 5, downsample=2)
    np.testing.assert_array_equal(t2, [[[2, 0]], [[0, 3]]])


# -- nodes on real recordings --------------------------------------------------------------------

def test_dog_encoder_on_gesture_clip_is_chunking_invariant(shared):
    ev = gesture(shared, 2)
    node, meta = make_node(DogEncoder, window_us=50_000, time_steps=20)
    assert meta["spikes_out"] == PortMeta("spikes", SensorSize(128, 128, 2))
    out = run_node(node, ev, 7_000)
    assert len(out) == 29                                     # 1.45 s in 50 ms windows
    assert [p.seq for p in out] == list(range(29))
    whole, _ = make_node(DogEncoder, window_us=50_000, time_steps=20)
    out_whole = run_node(whole, ev, 2_000_000)
    assert len(out_whole) == 29
    for a, b in zip(out, out_whole):
        assert a.t0_us == b.t0_us and np.array_equal(a.events, b.events)
    step = out[0].data["step_us"]
    assert step == 2500
    for k, pk in enumerate(out):
        ws = k * 50_000
        assert pk.kind == "spikes" and pk.t0_us == ws and pk.data["t_start_us"] == ws
        e = pk.events
        assert len(e) > 0 and set(np.unique(e["p"])) <= {0, 1}
        assert (e["t"] >= ws).all() and (e["t"] < ws + 20 * step).all()
        assert (np.diff(e["t"]) >= 0).all()
        # exactly what the plain functions give for the window's events
        win = time_slice(ev, ws, ws + 50_000)
        expect = dog_latency(event_map(win, 128, 128), 20)
        got = np.full((2, 128, 128), NS, np.int32)
        got[e["p"], e["y"], e["x"]] = (e["t"] - ws) // step
        np.testing.assert_array_equal(got, expect)
    assert node.stats()["windows"] == 29 and node.stats()["events_in"] == len(ev)


def test_dog_encoder_time_surface_overlapping_windows(shared):
    ev = gesture(shared, 4)[:40_000]
    node, _ = make_node(DogEncoder, window_us=40_000, stride_us=20_000, map="time_surface", tau_us=5_000.0,
                        downsample=2, time_steps=10)
    out = run_node(node, ev, 10_000)
    starts = [p.t0_us for p in out]
    assert starts == list(range(0, 20_000 * len(out), 20_000))
    assert out[0].sensor_size == SensorSize(64, 64, 2)
    pk = out[3]
    win = time_slice(ev, pk.t0_us, pk.t0_us + 40_000)
    m = event_map(win, 64, 64, "time_surface", pk.t0_us + 40_000, 5_000.0, 2)
    expect = dog_latency(m, 10)
    got = np.full((2, 64, 64), NS, np.int32)
    e = pk.events
    got[e["p"], e["y"], e["x"]] = (e["t"] - pk.t0_us) // pk.data["step_us"]
    np.testing.assert_array_equal(got, expect)


def test_polarity_encoder_on_gesture_clip(shared):
    ev = gesture(shared, 1)
    node, meta = make_node(PolarityEncoder, window_us=100_000, time_steps=25, downsample=2)
    assert meta["spikes_out"].sensor_size == SensorSize(64, 64, 2)
    out = run_node(node, ev, 33_000)
    assert len(out) == 15
    for pk in out:
        win = time_slice(ev, pk.t0_us, pk.t0_us + 100_000)
        expect = naive.times_from_events(win["p"], win["y"] // 2, win["x"] // 2, (win["t"] - pk.t0_us) // 4000,
                                         2, 64, 64, 25)
        e = pk.events
        got = np.full((2, 64, 64), NS, np.int32)
        got[e["p"], e["y"], e["x"]] = (e["t"] - pk.t0_us) // 4000
        np.testing.assert_array_equal(got, expect)
        assert len(e) == len(np.unique(e[["p", "x", "y"]]))      # one spike per neuron per window
    d = node.describe()
    assert d["type"] == "input" and d["out_shape"] == (2, 64, 64)


def test_polarity_encoder_skips_gaps_and_flushes_partial_window():
    ev = make_events([5, 15, 10_000_000_000, 10_000_000_001], [0, 1, 2, 3], [0, 0, 0, 0], [1, 0, 1, 1])
    node, _ = make_node(PolarityEncoder, sensor=SensorSize(4, 1, 2), window_us=1000, time_steps=10)
    a = node.process("events_in", Packet(sensor_size=SensorSize(4, 1, 2), t0_us=0, t1_us=2000, events=ev[:2]))
    b = node.process("events_in", Packet(sensor_size=SensorSize(4, 1, 2), t0_us=2000, t1_us=10_000_000_000,
                                         events=ev[:0]))
    c = node.process("events_in", Packet(sensor_size=SensorSize(4, 1, 2), t0_us=10_000_000_000,
                                         t1_us=10_000_000_002, events=ev[2:]))
    assert c == {}                                           # the window is not complete yet
    c = node.flush()
    # 10^7 empty windows in between are skipped without being visited; the last, partial one is flushed
    outs = a["spikes_out"] + b.get("spikes_out", []) + c["spikes_out"]
    assert [p.t0_us for p in outs] == [0, 10_000_000_000]
    assert outs[1].events.tolist() == [(10_000_000_000, 2, 0, 1), (10_000_000_000, 3, 0, 1)]


def test_event_encoder_for_networks(shared):
    ev = gesture(shared, 3)[:20_000]
    for mode in ("polarity", "dog"):
        t, T = EventEncoder((128, 128, 2), mode=mode, time_steps=16, downsample=4)(ev)
        assert t.shape == (2, 32, 32) and T == 16 and (t != NS).sum() > 20 and t[t != NS].max() <= 15


def test_encoder_params_are_validated():
    with pytest.raises(ParamError, match=r"nodes\.enc\.params\.stride_us"):
        make_node(PolarityEncoder, window_us=1000, stride_us=2000)
    with pytest.raises(ParamError, match=r"nodes\.enc\.params\.kernel_size"):
        make_node(DogEncoder, kernel_size=4)
    with pytest.raises(ParamError, match=r"params\.map"):
        build_params(DogEncoder, {"map": "histogram"})


# -- windowing: the reusable buffer ------------------------------------------------------------

def random_stream(rng, n, span_us, disorder=0.0):
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, span_us, n))
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
    swap = np.flatnonzero(rng.random(n - 1) < disorder) if n > 1 else []
    for i in swap:  # local disorder: neighbours exchanged, within or across packets
        ev[[i, i + 1]] = ev[[i + 1, i]]
    return ev


def cut_packets(rng, ev, span_us):
    """Random packet boundaries (empty packets and long gaps included): (events, t0, t1) views."""
    bounds = np.unique(np.concatenate([[0, span_us], rng.integers(0, span_us, int(rng.integers(1, 60)))]))
    idx = np.searchsorted(ev["t"], bounds) if np.all(np.diff(ev["t"]) >= 0) else \
        np.linspace(0, len(ev), len(bounds)).astype(int)
    idx[-1] = len(ev)
    return [(ev[idx[k]:idx[k + 1]], int(bounds[k]), int(bounds[k + 1])) for k in range(len(bounds) - 1)]


@pytest.mark.parametrize("seed", range(8))
def test_append_events_kernel_matches_naive(seed):
    rng = np.random.default_rng(seed)
    cap = 64
    lo, n = int(rng.integers(0, 10)), int(rng.integers(10, 30))
    ev = random_stream(rng, int(rng.integers(0, 30)), 1000, disorder=0.2 * (seed % 2))
    ev["t"] += int(rng.integers(-200, 200))
    bufs = [(np.zeros(cap, EVENT_DTYPE), np.zeros(cap, np.int64)) for _ in range(2)]
    for buf, t in bufs:
        t[:n] = np.sort(rng.integers(0, 500, n)) if seed else np.arange(n)
    bufs[1][1][:n] = bufs[0][1][:n]
    got = ek.append_events_(bufs[0][0], bufs[0][1], lo, n, ev)
    want = naive.append_events(bufs[1][0], bufs[1][1], lo, n, ev)
    assert got == want
    np.testing.assert_array_equal(bufs[0][0], bufs[1][0])
    np.testing.assert_array_equal(bufs[0][1], bufs[1][1])


@pytest.mark.parametrize("seed", range(12))
def test_windows_match_the_concatenating_twin(seed):
    """Window by window, the in-place buffer (tiny capacity: it shifts and grows often) gives
    exactly what the original concatenating version gives, in sorted and disordered streams."""
    rng = np.random.default_rng(seed)
    span = int(rng.integers(1000, 200_000))
    ev = random_stream(rng, int(rng.integers(0, 3000)), span, disorder=[0.0, 0.0, 0.01, 0.3][seed % 4])
    window = int(rng.integers(1, span // 4 + 2))
    stride = int(rng.integers(1, window + 1))
    ours, twin = _Windows(window, stride, capacity=int(rng.integers(1, 16))), naive.Windows(window, stride)
    for part, t0, t1 in cut_packets(rng, ev, span):
        got = [(ws, w.copy()) for ws, w in ours.push(part, t0, t1)]  # views: valid until the next push
        want = twin.push(part, t0, t1)
        assert [ws for ws, _ in got] == [ws for ws, _ in want]
        for (_, a), (_, b) in zip(got, want):
            np.testing.assert_array_equal(a, b)
    got, want = ours.flush(), twin.flush()
    assert [ws for ws, _ in got] == [ws for ws, _ in want]
    for (_, a), (_, b) in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(6))
def test_windows_of_a_sorted_stream_are_its_grid_windows(seed):
    """Over a whole sorted stream, in any packets: every non-empty window of the grid, once."""
    rng = np.random.default_rng(50 + seed)
    span = int(rng.integers(5000, 100_000))
    ev = random_stream(rng, int(rng.integers(1, 2000)), span)
    window = int(rng.integers(100, 20_000))
    stride = int(rng.integers(1, window + 1)) if seed % 2 else window
    win = _Windows(window, stride, capacity=4)
    got = []
    for part, t0, t1 in cut_packets(rng, ev, span):
        got += [(ws, w.copy()) for ws, w in win.push(part, t0, t1)]
    got += [(ws, w.copy()) for ws, w in win.flush()]
    want = naive.grid_windows(ev, 0, window, stride)
    assert [ws for ws, _ in got] == [ws for ws, _ in want]
    for (_, a), (_, b) in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_polarity_encoder_takes_read_only_packets(shared):
    """Packets received zero-copy off a socket are read-only: same spikes as from writable ones."""
    ev = gesture(shared, 2)[:30_000]
    outs = []
    for ro in (False, True):
        node, _ = make_node(PolarityEncoder, window_us=50_000, time_steps=10, downsample=2)
        spikes = []
        for pk in packets(ev, 1000):
            if ro:
                pk.events = pk.events.copy()
                pk.events.setflags(write=False)
            spikes += node.process("events_in", pk).get("spikes_out", [])
        outs.append(spikes + node.flush().get("spikes_out", []))
    assert len(outs[0]) == len(outs[1]) > 5
    for a, b in zip(*outs):
        assert a.t0_us == b.t0_us and np.array_equal(a.events, b.events)


# -- pinned outputs: the gesture graph's filter and encoder, before and after optimisations ----

def graph_digests(graph, nodes, paths=None, size=None, overrides=(), exclude=()):
    """``{node: (packets, events, sha256[:16])}`` of what ``nodes`` emit when ``graph`` (a file,
    or None for the bundled gesture model) replays its data flat out in-process: window, seq and
    event bytes of every packet (not the wall-clock ``sent_ns``)."""
    import hashlib
    from dataclasses import replace

    from spikeflow.service.cli_bench import build_spec
    from spikeflow.service.pipeline import LocalChain

    spec, _ = build_spec(graph, data_paths=paths, sensor_size=size, speed=0.0, workers=1, overrides=list(overrides))
    src = next(n for n in spec.order if spec.nodes[n].cls.is_source)
    ns = spec.nodes[src]
    source = ns.cls(src, replace(ns.params, speed=0.0))
    metas = source.setup({})
    taps = [(n, p) for n in nodes for p in spec.nodes[n].cls.outputs]
    try:
        with LocalChain(spec, {(src, p): m for p, m in metas.items()}, taps=taps, exclude=exclude) as chain:
            for port, pkt in source.packets():
                chain.feed(src, port, pkt)
            chain.flush()
            out = {}
            for (n, _), pkts in chain.taps.items():
                h = hashlib.sha256()
                for pk in pkts:
                    h.update(repr((pk.kind, pk.seq, tuple(pk.sensor_size), pk.t0_us, pk.t1_us)).encode())
                    h.update(pk.events.tobytes())
                out[n] = (len(pkts), sum(len(pk.events) for pk in pkts), h.hexdigest()[:16])
    finally:
        source.close()
    return out


def test_gesture_graph_filter_and_encoder_outputs_are_pinned(shared):
    """The bundled gesture graph's noise filter and polarity encoder emit exactly what they emitted
    before their per-packet costs were cut (digests taken from commit 310f112), on two bundled
    clips and on a real DVS128 Gesture clip, in 1 ms packets."""
    from spikeflow import recordings

    clips = [str(recordings.path(c)) for c in ("gesture_01_hand_clapping_s4.sfe",
                                               "gesture_05_right_arm_counter_clockwise_s4.sfe")]
    assert graph_digests(None, ["denoise", "enc"], paths=clips, exclude=["conv1", "score"]) == {
        "denoise": (2900, 19046, "f4f93383f1dc6cc8"), "enc": (58, 2653, "3ac54603db611219")}
    real = [str(shared("recordings/slayer-dvsgesture/1.bs2"))]
    assert graph_digests(None, ["denoise", "enc"], paths=real, size=(128, 128, 2), exclude=["conv1", "score"]) == {
        "denoise": (1450, 42039, "6f83c8304826821e"), "enc": (29, 8989, "5bd1650b695786f9")}
