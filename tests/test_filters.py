"""Filters: numba kernels against their naive twins, state across packets, tonic cross-checks."""

from __future__ import annotations

import numpy as np
import pytest
import tonic.transforms as tt

import naive_filters as naive
from spikeflow.drivers.recording import read_recording
from spikeflow.nodes.base import PortMeta, build_params
from spikeflow.nodes.filter_kernels import (NEVER_US, background_activity_, background_activity_compact_,
                                            refractory_, refractory_compact_)
from spikeflow.nodes.filters import NoiseFilter, RefractoryFilter, TonicTransform
from spikeflow.service.errors import ParamError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, window_bounds
from spikeflow.service.packet import events_packet


def random_events(rng, n, w, h, span_us, out_of_range=0.0):
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, span_us, n))
    ev["x"] = rng.integers(0, w, n)
    ev["y"] = rng.integers(0, h, n)
    ev["p"] = rng.integers(0, 2, n)
    bad = rng.random(n) < out_of_range
    ev["x"][bad] = rng.choice([-1, w, w + 5], bad.sum())
    return ev


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius,eight", [(1, True), (1, False), (2, True), (3, False)])
def test_background_activity_kernel_matches_naive(seed, radius, eight):
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(4, 40)), int(rng.integers(4, 40))
    ev = random_events(rng, int(rng.integers(0, 3000)), w, h, int(rng.integers(1, 200_000)), out_of_range=0.02)
    window = int(rng.integers(1, 20_000))
    last = np.full((h, w), NEVER_US, np.int64)
    keep = np.zeros(len(ev), bool)
    oor = background_activity_(last, ev["x"], ev["y"], ev["t"], window, radius, eight, keep)
    want = naive.background_activity(ev, (w, h), window, radius, eight)
    np.testing.assert_array_equal(keep, want)
    inside = (ev["x"] >= 0) & (ev["x"] < w) & (ev["y"] >= 0) & (ev["y"] < h)
    assert oor == int((~inside).sum())


@pytest.mark.parametrize("seed", range(8))
def test_refractory_kernel_matches_naive(seed):
    rng = np.random.default_rng(100 + seed)
    w, h = int(rng.integers(2, 20)), int(rng.integers(2, 20))
    ev = random_events(rng, int(rng.integers(0, 4000)), w, h, int(rng.integers(1, 100_000)), out_of_range=0.01)
    refr = int(rng.integers(0, 5000))
    last = np.full((h, w), NEVER_US, np.int64)
    keep = np.zeros(len(ev), bool)
    refractory_(last, ev["x"], ev["y"], ev["t"], refr, keep)
    np.testing.assert_array_equal(keep, naive.refractory(ev, (w, h), refr))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius,eight", [(1, True), (1, False), (2, True)])
def test_background_activity_compact_kernel_matches_naive(seed, radius, eight):
    """The fused kernel (filter + copy of the kept events) keeps what the naive twin keeps, and
    leaves the same timestamp map as the mask kernel."""
    rng = np.random.default_rng(200 + seed)
    w, h = int(rng.integers(4, 40)), int(rng.integers(4, 40))
    ev = random_events(rng, int(rng.integers(0, 3000)), w, h, int(rng.integers(1, 200_000)), out_of_range=0.02)
    window = int(rng.integers(1, 20_000))
    last = np.full((h, w), NEVER_US, np.int64)
    out = np.zeros(len(ev), EVENT_DTYPE)
    n_kept, oor = background_activity_compact_(last, ev, window, radius, eight, out)
    want = naive.background_activity(ev, (w, h), window, radius, eight)
    np.testing.assert_array_equal(out[:n_kept], ev[want])
    inside = (ev["x"] >= 0) & (ev["x"] < w) & (ev["y"] >= 0) & (ev["y"] < h)
    assert oor == int((~inside).sum())
    last2 = np.full((h, w), NEVER_US, np.int64)
    background_activity_(last2, ev["x"], ev["y"], ev["t"], window, radius, eight, np.zeros(len(ev), bool))
    np.testing.assert_array_equal(last, last2)


@pytest.mark.parametrize("seed", range(6))
def test_refractory_compact_kernel_matches_naive(seed):
    rng = np.random.default_rng(300 + seed)
    w, h = int(rng.integers(2, 20)), int(rng.integers(2, 20))
    ev = random_events(rng, int(rng.integers(0, 4000)), w, h, int(rng.integers(1, 100_000)), out_of_range=0.01)
    refr = int(rng.integers(0, 5000))
    last = np.full((h, w), NEVER_US, np.int64)
    out = np.zeros(len(ev), EVENT_DTYPE)
    n_kept, oor = refractory_compact_(last, ev, refr, out)
    kept = ev if n_kept == len(ev) else out[:n_kept]   # everything kept: nothing copied
    np.testing.assert_array_equal(kept, ev[naive.refractory(ev, (w, h), refr)])
    last2 = np.full((h, w), NEVER_US, np.int64)
    assert oor == refractory_(last2, ev["x"], ev["y"], ev["t"], refr, np.zeros(len(ev), bool))
    np.testing.assert_array_equal(last, last2)


@pytest.mark.parametrize("first_drop,why", [(None, ""), (0, "range"), (1, "refractory"), (500, "range"),
                                            (500, "refractory"), (999, "refractory")])
def test_refractory_compact_copies_only_from_the_first_dropped_event(first_drop, why):
    """A packet that loses nothing is not copied (``out`` untouched); one that loses event k
    (outside the sensor, or too soon after the event before it on the same pixel) has events
    [0, k) copied at once and the others after them, as the mask kernel keeps them."""
    rng = np.random.default_rng(7)
    ev = np.zeros(1000, EVENT_DTYPE)
    ev["t"] = np.arange(1000) * 10
    pixels = rng.permutation(64 * 64)[:1000]   # one event per pixel: nothing refractory by chance
    ev["x"], ev["y"] = pixels % 64, pixels // 64
    if why == "range":
        ev["x"][first_drop] = 64   # outside the 64 x 64 sensor
    elif why == "refractory":
        ev[["x", "y"]][first_drop] = ev[["x", "y"]][first_drop - 1]   # 10 us after, refractory 20 us
    last = np.full((64, 64), NEVER_US, np.int64)
    out = np.full(1000, 0x55, EVENT_DTYPE)
    untouched = out.copy()
    n_kept, oor = refractory_compact_(last, ev, 20, out)
    if first_drop is None:
        assert (n_kept, oor) == (1000, 0)
        np.testing.assert_array_equal(out, untouched)
    else:
        assert (n_kept, oor) == (999, int(why == "range"))
        np.testing.assert_array_equal(out[:999], np.delete(ev, first_drop))
    last2 = np.full((64, 64), NEVER_US, np.int64)
    refractory_(last2, ev["x"], ev["y"], ev["t"], 20, np.zeros(1000, bool))
    np.testing.assert_array_equal(last, last2)


def _run_node(node, ev, size, window_us):
    """Feed ``ev`` to a node in packets of ``window_us``; return the concatenated output."""
    node.setup({"events_in": PortMeta("events", SensorSize(*size))})
    out = []
    b = window_bounds(ev, window_us)
    for k in range(len(b) - 1):
        part = ev[b[k, 1]:b[k + 1, 1]]
        pkt = events_packet(part, "s", k, size, b[k, 0], b[k + 1, 0])
        res = node.process("events_in", pkt)
        (p,) = res["events_out"]
        assert p.seq == k and p.t0_us == b[k, 0]  # metadata rides along
        out.append(p.events)
    return np.concatenate(out) if out else np.zeros(0, EVENT_DTYPE)


@pytest.fixture
def nmnist(shared):
    ev, info = read_recording(shared("recordings/tonic-testdata/sample_nmnist.bin"))
    return ev, info.sensor_size


@pytest.mark.parametrize("window_us", [100, 1000, 50_000])
def test_noise_filter_keeps_state_across_packets(nmnist, window_us):
    """Filtering packet by packet equals filtering the whole recording at once (real N-MNIST file)."""
    ev, size = nmnist
    node = NoiseFilter("f", build_params(NoiseFilter, {"window_us": 2000}))
    got = _run_node(node, ev, size, window_us)
    want = ev[naive.background_activity(ev, size, 2000)]
    np.testing.assert_array_equal(got, want)
    assert 0 < len(got) < len(ev)
    st = node.stats()
    assert st["events_in"] == len(ev) and st["events_kept"] == len(got)


def test_noise_filter_agrees_with_tonic_denoise(nmnist):
    """With the 4-neighbourhood, our filter is tonic's Denoise (past tonic's start-up artefact:
    tonic treats every pixel as having fired at t = 0, so only events with t >= window compare)."""
    ev, size = nmnist
    window = 3000
    node = NoiseFilter("f", build_params(NoiseFilter, {"window_us": window, "neighbourhood": 4}))
    ours = _run_node(node, ev, size, 1000)
    theirs = tt.Denoise(filter_time=window)(ev)
    np.testing.assert_array_equal(ours[ours["t"] >= window], theirs[theirs["t"] >= window])


def test_noise_filter_removes_isolated_noise():
    """A dense moving edge survives, uniformly scattered single events do not."""
    rng = np.random.default_rng(7)
    t = np.arange(0, 100_000, 50)
    edge = np.zeros(len(t), EVENT_DTYPE)
    edge["t"], edge["x"], edge["y"], edge["p"] = t, (t // 1000) % 64, (t // 50) % 64, 1
    noise = random_events(rng, 300, 64, 64, 100_000)
    ev = np.sort(np.concatenate([edge, noise]), order="t", kind="stable")
    node = NoiseFilter("f", build_params(NoiseFilter, {"window_us": 1000}))
    out = _run_node(node, ev, (64, 64, 2), 5000)
    is_noise = np.isin(out[["t", "x", "y"]], noise[["t", "x", "y"]])
    kept_signal = len(out) - is_noise.sum()
    assert kept_signal > 0.9 * len(edge)
    assert is_noise.sum() < 0.1 * len(noise)


def test_out_of_range_events_are_dropped_and_counted():
    ev = np.zeros(4, EVENT_DTYPE)
    ev["t"] = [0, 1, 2, 3]
    ev["x"] = [0, 1, 40, -3]
    ev["y"] = [0, 0, 0, 0]
    node = RefractoryFilter("r", build_params(RefractoryFilter, {"refractory_us": 0}))
    out = _run_node(node, ev, (8, 8, 2), 10)
    np.testing.assert_array_equal(out["x"], [0, 1])
    assert node.stats()["out_of_range"] == 2


def test_refractory_filter_thins_bursts():
    ev = np.zeros(10, EVENT_DTYPE)
    ev["t"] = np.arange(10) * 100  # one pixel, every 100 us
    node = RefractoryFilter("r", build_params(RefractoryFilter, {"refractory_us": 300}))
    out = _run_node(node, ev, (4, 4, 2), 250)
    np.testing.assert_array_equal(out["t"], [0, 300, 600, 900])


def test_filter_packets_keep_their_metadata_and_pass_untouched_views(nmnist):
    """The output packet is the input's metadata (every field but events) around the kept events;
    a packet whose events all survive passes on its own array (no copy). Read-only and strided
    input (zero-copy off a socket, a slice with a step) filter like writable contiguous input."""
    import dataclasses

    ev, size = nmnist
    ev = ev[:4000]
    pk = events_packet(ev, "src.events_out", 7, size, 0, int(ev["t"][-1]) + 1, sent_ns=123)
    pk.data = {"truth": {"label": 3}}
    node = NoiseFilter("f", build_params(NoiseFilter, {"window_us": 2000}))
    node.setup({"events_in": PortMeta("events", SensorSize(*size))})
    (out,) = node.process("events_in", pk)["events_out"]
    for f in dataclasses.fields(out):
        if f.name != "events":
            assert getattr(out, f.name) == getattr(pk, f.name), f.name
    want = naive.background_activity(ev, size, 2000)
    assert 0 < want.sum() < len(ev)
    np.testing.assert_array_equal(out.events, ev[want])
    node = RefractoryFilter("r", build_params(RefractoryFilter, {"refractory_us": 0}))
    node.setup({"events_in": PortMeta("events", SensorSize(*size))})
    assert node.process("events_in", pk)["events_out"][0].events is ev
    for variant in ("read-only", "strided"):
        e = ev.copy() if variant == "read-only" else np.repeat(ev, 2)[::2]
        if variant == "read-only":
            e.setflags(write=False)
        node = NoiseFilter("f", build_params(NoiseFilter, {"window_us": 2000}))
        node.setup({"events_in": PortMeta("events", SensorSize(*size))})
        got = node.process("events_in", events_packet(e, "s", 0, size, 0, int(e["t"][-1]) + 1))["events_out"][0]
        np.testing.assert_array_equal(got.events, ev[want])


def test_default_graph_output_is_pinned(shared):
    """The default graph (`spikeflow run --demo`: replay -> noise_filter) emits exactly what it
    emitted before the filter's per-packet costs were cut (digests from commit 310f112): its
    bundled clip in 1 ms and 10 ms packets, and a real DVS128 Gesture clip."""
    from pathlib import Path

    from test_encoders import graph_digests

    graph = str(Path(__file__).resolve().parents[1] / "service" / "graphs" / "default.toml")
    assert graph_digests(graph, ["denoise"]) == {"denoise": (1450, 11699, "205ed3de9e16cf6e")}
    assert graph_digests(graph, ["denoise"], overrides=["nodes.src.params.window_us=10000"]) == {
        "denoise": (145, 11699, "e25c54070b11ee1c")}
    real = [str(shared("recordings/slayer-dvsgesture/2.bs2"))]
    assert graph_digests(graph, ["denoise"], paths=real, size=(128, 128, 2)) == {
        "denoise": (1450, 60375, "1cc1175d09f9507c")}


# -- tonic_transform -------------------------------------------------------------------------

def _tonic_node(transform, kwargs=None, **extra):
    raw = {"transform": transform, **({"kwargs": kwargs} if kwargs is not None else {}), **extra}
    return TonicTransform("tt", build_params(TonicTransform, raw, key="nodes.tt.params"))


@pytest.mark.parametrize("name,kwargs", [
    ("Denoise", {"filter_time": 5000}),
    ("RefractoryPeriod", {"delta": 1000}),
    ("Decimation", {"n": 3}),
    ("TimeSkew", {"coefficient": 1.5, "offset": 10}),
    ("SpatialJitter", {"var_x": 0.0, "var_y": 0.0, "clip_outliers": True}),
])
def test_tonic_transform_equals_tonic_on_real_events(nmnist, name, kwargs):
    """The node applied to one packet gives exactly what tonic gives on the same events."""
    ev, size = nmnist
    node = _tonic_node(name, kwargs)
    meta = node.setup({"events_in": PortMeta("events", size)})
    assert meta["events_out"].sensor_size == size
    out = node.process("events_in", events_packet(ev, "s", 0, size, 0, int(ev["t"][-1]) + 1))["events_out"][0]
    import inspect
    cls = getattr(tt, name)
    kw = dict(kwargs)
    if "sensor_size" in inspect.signature(cls).parameters:
        kw["sensor_size"] = tuple(size)
    want = cls(**kw)(ev.copy())
    assert out.events.dtype == EVENT_DTYPE
    for f in "txyp":
        np.testing.assert_array_equal(out.events[f], want[f].astype(out.events[f].dtype))


def test_tonic_transform_derives_output_size():
    node = _tonic_node("Downsample", {"spatial_factor": 0.5})
    meta = node.setup({"events_in": PortMeta("events", SensorSize(128, 128, 2))})
    assert meta["events_out"].sensor_size == SensorSize(64, 64, 2)
    node = _tonic_node("CenterCrop", {"size": [32, 16]})
    meta = node.setup({"events_in": PortMeta("events", SensorSize(128, 128, 2))})
    assert meta["events_out"].sensor_size == SensorSize(32, 16, 2)


def test_tonic_transform_errors_name_the_key():
    with pytest.raises(ParamError, match=r"nodes\.tt\.params\.transform: unknown tonic transform 'Nope'"):
        _tonic_node("Nope")
    with pytest.raises(ParamError, match=r"nodes\.tt\.params\.kwargs\.bogus: Denoise has no argument"):
        _tonic_node("Denoise", {"bogus": 1})
    node = _tonic_node("ToFrame", {"n_time_bins": 2})
    with pytest.raises(ParamError, match=r"nodes\.tt\.params\.transform: ToFrame returns .* not events"):
        node.setup({"events_in": PortMeta("events", SensorSize(16, 16, 2))})
