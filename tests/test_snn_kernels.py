"""Fast numba kernels vs the naive numpy twins (tests/naive.py) over many random inputs.

Spike times must match exactly, potentials and weights within 1e-6, on both conv paths.
"""

from __future__ import annotations

import numpy as np
import pytest

import naive
from spikeflow.nodes import encoder_kernels as ek
from spikeflow.nodes import snn_kernels as sk

SEEDS = range(40)


def random_times(rng, c, h, w, time_steps, density):
    t = rng.integers(0, time_steps, size=(c, h, w)).astype(np.int32)
    t[rng.random((c, h, w)) > density] = sk.NO_SPIKE
    return t


def random_case(seed):
    rng = np.random.default_rng(seed)
    c_in = int(rng.integers(1, 4))
    c_out = int(rng.integers(1, 5))
    k = int(rng.integers(1, 5))
    h, w = int(rng.integers(k, 12)), int(rng.integers(k, 12))
    time_steps = int(rng.integers(2, 10))
    stride = int(rng.integers(1, 3))
    pad = int(rng.integers(0, k))
    times = random_times(rng, c_in, h, w, time_steps, rng.uniform(0.05, 0.9))
    weights = rng.uniform(0, 1, size=(c_out, c_in, k, k))
    # thresholds around the typical receptive-field drive, so that some neurons fire and some do not
    thresholds = rng.uniform(0.2, 0.6, size=c_out) * c_in * k * k * 0.5
    leak = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.5, 0.99))
    return times, weights, thresholds, stride, pad, time_steps, leak


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", ["event", "dense"])
@pytest.mark.parametrize("inhibit", [False, True])
def test_conv_matches_naive(seed, path, inhibit):
    times, weights, thr, stride, pad, T, leak = random_case(seed)
    kernel = sk.conv_event if path == "event" else sk.conv_dense
    t_fast, v1_fast, vf_fast, n_in, n_out, n_inh = kernel(times, weights, thr, stride, pad, T, leak, inhibit, 2)
    t_ref, v1_ref, vf_ref = naive.conv(times, weights, thr, stride, pad, T, leak)
    n_fired = int((t_ref != sk.NO_SPIKE).sum())
    if inhibit:
        t_ref, v1_ref = naive.pointwise_inhibition(t_ref, v1_ref)
    np.testing.assert_array_equal(t_fast, t_ref)
    np.testing.assert_allclose(v1_fast, v1_ref, atol=1e-6)
    np.testing.assert_allclose(vf_fast, vf_ref, atol=1e-6)
    assert n_in == (times != sk.NO_SPIKE).sum()
    assert n_out == (t_ref != sk.NO_SPIKE).sum() and n_out + n_inh == n_fired
    # without the potentials the spikes are the same and the potential maps are empty
    t2, v2, vf2, *_ = kernel(times, weights, thr, stride, pad, T, leak, inhibit, 0)
    np.testing.assert_array_equal(t2, t_fast)
    assert vf2.size == 0 and v2.size == 0
    t3, v3, vf3, n_in3, n_out3, n_inh3 = kernel(times, weights, thr, stride, pad, T, leak, inhibit, 1)
    np.testing.assert_array_equal(t3, t_fast)                                     # first-spike potentials only
    np.testing.assert_array_equal(v3, v1_fast)
    assert vf3.size == 0 and n_out3 == n_out
    # with inhibition and no final potentials, the event path skips settled positions: fewer
    # losing spikes are even generated, the survivors are the same
    assert n_inh3 <= n_inh if (inhibit and path == "event") else n_inh3 == n_inh


def test_conv_auto_picks_path_by_activity():
    rng = np.random.default_rng(1)
    weights = rng.uniform(0, 1, (3, 2, 3, 3))
    thr = np.full(3, 2.0)
    sparse = random_times(rng, 2, 10, 10, 5, 0.05)
    dense = random_times(rng, 2, 10, 10, 5, 0.9)
    for times, expect_dense in ((sparse, False), (dense, True)):
        ws = (np.zeros((100, 3)), np.zeros((100, 3), bool), np.zeros(100, np.int32), np.zeros(100, np.int32),
              np.zeros(100, np.int32), np.empty(100, np.int64))
        for _ in range(2):  # the reused workspaces are left clean: a second run gives the same result
            t, v1, vf, n_in, n_out, n_inh, used_dense = sk.conv_auto(times, weights, thr, 1, 1, 5, 1.0, False, 2,
                                                                      0.3, *ws)
            assert used_dense is expect_dense
            np.testing.assert_array_equal(t, naive.conv(times, weights, thr, 1, 1, 5)[0])
        assert not any(a.any() for a in ws[:5])


@pytest.mark.parametrize("seed", SEEDS)
def test_pool_matches_naive(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 4))
    stride = int(rng.integers(1, 4))
    pad = int(rng.integers(0, k))
    times = random_times(rng, int(rng.integers(1, 4)), int(rng.integers(k, 12)), int(rng.integers(k, 12)), 8, 0.3)
    ref = naive.pool(times, k, stride, pad, 8)
    np.testing.assert_array_equal(sk.first_spike_pool(times, k, stride, pad), ref)
    out, n_in, n_out = sk.first_spike_pool_count(times, k, stride, pad, 8)
    np.testing.assert_array_equal(out, ref)
    assert n_in == (times != sk.NO_SPIKE).sum() and n_out == (ref != sk.NO_SPIKE).sum()


@pytest.mark.parametrize("seed", SEEDS)
def test_pointwise_inhibition_matches_naive(seed):
    rng = np.random.default_rng(seed)
    t = random_times(rng, int(rng.integers(1, 6)), 6, 7, 4, 0.5)  # few steps: many time ties
    v = rng.uniform(0, 5, t.shape).round(1)                        # rounded: some potential ties
    v[t == sk.NO_SPIKE] = 0
    t_ref, v_ref = naive.pointwise_inhibition(t, v)
    t_fast, v_fast = t.copy(), v.copy()
    removed = sk.pointwise_inhibition_(t_fast, v_fast)
    np.testing.assert_array_equal(t_fast, t_ref)
    np.testing.assert_array_equal(v_fast, v_ref)
    assert removed == int((t != sk.NO_SPIKE).sum() - (t_ref != sk.NO_SPIKE).sum())
    assert ((t_fast != sk.NO_SPIKE).sum(axis=0) <= 1).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_k_winners_matches_naive(seed):
    rng = np.random.default_rng(seed)
    t = random_times(rng, int(rng.integers(1, 8)), int(rng.integers(1, 10)), int(rng.integers(1, 10)), 3, 0.4)
    v = rng.uniform(0, 3, t.shape).round(1)
    k = int(rng.integers(1, 6))
    radius = int(rng.integers(0, 3))
    np.testing.assert_array_equal(sk.k_winners(t, v, k, radius), naive.k_winners(t, v, k, radius))


@pytest.mark.parametrize("seed", SEEDS)
def test_stdp_matches_naive(seed):
    rng = np.random.default_rng(seed)
    times, weights, thr, stride, pad, T, leak = random_case(seed)
    t_out, v1, *_ = sk.conv_event(times, weights, thr, stride, pad, T, leak, True, 1)
    winners = sk.k_winners(t_out, v1, 3, 1)
    c_out = weights.shape[0]
    a_plus = rng.uniform(0.001, 0.1, c_out)
    a_minus = -rng.uniform(0.001, 0.1, c_out)
    stabilize = bool(rng.integers(0, 2))
    w_fast = weights.copy()
    n = sk.stdp_(w_fast, times, winners, t_out, a_plus, a_minus, stride, pad, stabilize, 0.0, 1.0)
    w_ref = naive.stdp(weights, times, winners, t_out, a_plus, a_minus, stride, pad, stabilize)
    np.testing.assert_allclose(w_fast, w_ref, atol=1e-6)
    assert n == len(winners) * weights[0].size


@pytest.mark.parametrize("seed", SEEDS)
def test_times_from_events_matches_naive(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    c, y, x = rng.integers(-1, 4, n), rng.integers(-1, 9, n), rng.integers(-1, 9, n)
    step = rng.integers(-2, 12, n)
    np.testing.assert_array_equal(sk.times_from_events(c, y, x, step, 3, 8, 8, 10),
                                  naive.times_from_events(c, y, x, step, 3, 8, 8, 10))


# -- encoder kernels --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_filter2d_matches_naive(seed):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 1, (int(rng.integers(3, 15)), int(rng.integers(3, 15))))
    img[rng.random(img.shape) < 0.5] = 0
    s = int(rng.choice([1, 3, 5, 7]))
    kernels = np.stack([naive.dog_kernel(s, 1, 2), naive.dog_kernel(s, 2, 1)]) if s > 1 else rng.normal(size=(2, 1, 1))
    np.testing.assert_allclose(ek.filter2d(img, kernels), naive.filter2d(img, kernels), atol=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_local_normalize_matches_naive(seed):
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0, 4, (2, int(rng.integers(2, 12)), int(rng.integers(2, 12))))
    r = int(rng.integers(0, 5))
    np.testing.assert_allclose(ek.local_normalize(maps, r, 1e-12), naive.local_normalize(maps, r), rtol=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_rank_latency_matches_naive(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2, int(rng.integers(1, 12)), int(rng.integers(1, 12)))).round(1)  # ties
    T = int(rng.integers(1, 31))
    thr = float(rng.choice([0.0, 0.3]))
    np.testing.assert_array_equal(ek.rank_latency(x, T, thr), naive.rank_latency(x, T, thr))


@pytest.mark.parametrize("seed", SEEDS)
def test_event_maps_match_naive(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    ds = int(rng.integers(1, 4))
    x, y = rng.integers(0, 20, n), rng.integers(0, 16, n)
    t = np.sort(rng.integers(0, 10_000, n))
    h, w = 16 // ds, 20 // ds
    np.testing.assert_array_equal(ek.count_map(x, y, h, w, ds), _clip_count(x, y, h, w, ds))
    np.testing.assert_allclose(ek.time_surface(t, x, y, h, w, 10_000, 2_000.0, ds),
                               _clip_surface(t, x, y, h, w, ds), atol=1e-12)


def _clip_count(x, y, h, w, ds):
    keep = (y // ds < h) & (x // ds < w)
    return naive.count_map(x[keep], y[keep], h, w, ds)


def _clip_surface(t, x, y, h, w, ds):
    keep = (y // ds < h) & (x // ds < w)
    return naive.time_surface(t[keep], x[keep], y[keep], h, w, 10_000, 2_000.0, ds)


@pytest.mark.parametrize("seed", range(3))
def test_event_path_bands_large_maps_like_dense(seed):
    # wide maps make the event kernel split output rows into several L2-sized bands
    rng = np.random.default_rng(seed)
    times = random_times(rng, 2, 150, 120, 6, 0.1)
    weights = rng.uniform(0, 1, (40, 2, 5, 5))
    thr = rng.uniform(3, 8, 40)
    stride = 1 + seed % 2
    ev = sk.conv_event(times, weights, thr, stride, 2, 6, 1.0 if seed else 0.9, True, 2)
    de = sk.conv_dense(times, weights, thr, stride, 2, 6, 1.0 if seed else 0.9, True, 2)
    assert 65536 // (ev[0].shape[2] * 40) < ev[0].shape[1]            # more than one band
    np.testing.assert_array_equal(ev[0], de[0])
    np.testing.assert_allclose(ev[1], de[1], atol=1e-9)
    np.testing.assert_allclose(ev[2], de[2], atol=1e-9)
    assert ev[3:] == de[3:]


# -- sparse samples (the streaming path: no dense maps between layers) -----------------------

def _sparse_ws(n_pos, c_out, c_in, kh, kw, pad_to=8):
    c_pad = -(-c_out // pad_to) * pad_to
    n = n_pos * c_out
    return ((np.zeros((n_pos, c_pad)), np.zeros((n_pos, c_pad), bool), np.zeros(n_pos, np.int32),
             np.zeros(n_pos, np.int32), np.zeros(n_pos, np.int32), np.empty(n_pos, np.int64),
             np.full(n_pos, -1, np.int64)) + sk.prune_workspace(n_pos, c_in, kh, kw)
            + sk.weight_workspace(c_in, kh, kw, c_pad) + (np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n)))


def _assert_ws_clean(ws):
    v, done, stamp, last, settled, _, best, ub, npend, _, *_ = ws
    assert not v.any() and not done.any() and not stamp.any() and not last.any() and not settled.any()
    assert (best == -1).all() and not ub.any() and not npend.any()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("inhibit", [False, True])
def test_conv_event_sparse_matches_naive(seed, inhibit):
    times, weights, thr, stride, pad, T, leak = random_case(seed)
    c_in, h, w = times.shape
    c_out, _, kh, kw = weights.shape
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    order, starts = sk.spikes_by_step(times, T)
    t_ref, v1_ref, _ = naive.conv(times, weights, thr, stride, pad, T, leak)
    n_fired = int((t_ref != sk.NO_SPIKE).sum())
    if inhibit:
        t_ref, v1_ref = naive.pointwise_inhibition(t_ref, v1_ref)
    ws = _sparse_ws(ho * wo, c_out, c_in, kh, kw)
    for _ in range(2):  # the reused workspaces are left clean: a second run gives the same result
        o, st, v_out, n_in, n_out, n_inh = sk.conv_event_sparse(order, starts, c_in, h, w, weights, thr, stride, pad,
                                                                T, leak, inhibit, *ws)
        np.testing.assert_array_equal(sk.sparse_to_times(o, st, c_out, ho, wo, T), t_ref)
        flat_t = np.repeat(np.arange(T), np.diff(st))
        assert (np.diff(flat_t * t_ref.size + o) > 0).all()                  # sorted by (step, flat index)
        np.testing.assert_allclose(v_out, v1_ref.ravel()[o], atol=1e-6)     # potential at the spike
        assert n_in == (times != sk.NO_SPIKE).sum() and n_out == len(o)
        # without inhibition every crossing is an output; with it, the positions settled in an earlier
        # step take no more input, so later losing crossings are not even generated (as conv_event's)
        assert n_out + n_inh == n_fired if not inhibit else n_out + n_inh <= n_fired
        _assert_ws_clean(ws)


def test_conv_event_sparse_pending_record_overflows():
    # 100 taps per neuron, thresholds so high that more than the 64 recorded taps arrive before
    # any map can fire: the record fills up and the position is materialised early
    rng = np.random.default_rng(5)
    times = random_times(rng, 4, 12, 12, 6, 0.95)
    weights = rng.uniform(0.45, 0.5, (40, 4, 5, 5))
    thr = rng.uniform(33, 40, 40)                              # > 64 · max weight
    t_ref, v1_ref, _ = naive.conv(times, weights, thr, 1, 2, 6)
    t_ref, v1_ref = naive.pointwise_inhibition(t_ref, v1_ref)
    assert (t_ref != sk.NO_SPIKE).any()
    order, starts = sk.spikes_by_step(times, 6)
    ws = _sparse_ws(144, 40, 4, 5, 5)
    assert ws[9].shape[1] == 64
    o, st, v_out, *_ = sk.conv_event_sparse(order, starts, 4, 12, 12, weights, thr, 1, 2, 6, 1.0, True, *ws)
    np.testing.assert_array_equal(sk.sparse_to_times(o, st, 40, 12, 12, 6), t_ref)
    np.testing.assert_allclose(v_out, v1_ref.ravel()[o], atol=1e-6)
    for want in (0, 1, 2):
        np.testing.assert_array_equal(sk.conv_event(times, weights, thr, 1, 2, 6, 1.0, True, want)[0], t_ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_pool_sparse_matches_naive(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 4))
    stride = int(rng.integers(1, 4))
    pad = int(rng.integers(0, k))
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(k, 12)), int(rng.integers(k, 12))
    times = random_times(rng, c, h, w, 8, 0.3)
    ref = naive.pool(times, k, stride, pad, 8)
    first = np.full(ref.size, sk.NO_SPIKE, np.int32)
    o, st, n_in, n_out = sk.pool_sparse(*sk.spikes_by_step(times, 8), c, h, w, k, stride, pad, 8, first)
    np.testing.assert_array_equal(sk.sparse_to_times(o, st, *ref.shape, 8), ref)
    for a, b in zip((o, st), sk.spikes_by_step(ref, 8)):                       # same order as from the map
        np.testing.assert_array_equal(a, b)
    assert n_in == (times != sk.NO_SPIKE).sum() and n_out == (ref != sk.NO_SPIKE).sum()
    assert (first == sk.NO_SPIKE).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_k_winners_sparse_matches_naive(seed):
    rng = np.random.default_rng(seed)
    t = random_times(rng, int(rng.integers(1, 8)), int(rng.integers(1, 10)), int(rng.integers(1, 10)), 3, 0.4)
    v = rng.uniform(0, 3, t.shape).round(1)
    k = int(rng.integers(1, 6))
    radius = int(rng.integers(0, 3))
    o, st = sk.spikes_by_step(t, 3)
    winners, t_post = sk.k_winners_sparse(o, st, v.ravel()[o], t.shape[1], t.shape[2], 3, k, radius)
    ref = naive.k_winners(t, v, k, radius)
    np.testing.assert_array_equal(winners, ref)
    np.testing.assert_array_equal(t_post, [t[f, y, x] for f, y, x in ref])


@pytest.mark.parametrize("seed", SEEDS)
def test_sparse_from_events_matches_naive(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    c, y, x = rng.integers(-1, 4, n), rng.integers(-1, 9, n), rng.integers(-1, 9, n)
    step = rng.integers(-2, 12, n)
    first = np.full(3 * 8 * 8, sk.NO_SPIKE, np.int32)
    o, st = sk.sparse_from_events(c, y, x, step, 3, 8, 8, 10, first)
    ref = naive.times_from_events(c, y, x, step, 3, 8, 8, 10)
    np.testing.assert_array_equal(sk.sparse_to_times(o, st, 3, 8, 8, 10), ref)
    for a, b in zip((o, st), sk.spikes_by_step(ref, 10)):
        np.testing.assert_array_equal(a, b)
    assert (first == sk.NO_SPIKE).all()


@pytest.mark.parametrize("seed", range(20))
def test_sparse_from_fields_and_back(seed):
    # straight from EVENT_DTYPE field views (any order, duplicates, downsampling, out-of-window
    # times) -> sparse sample; then back to event fields
    from spikeflow.service.events import EVENT_DTYPE
    rng = np.random.default_rng(seed)
    n, ds, t0, step_len = int(rng.integers(0, 400)), int(rng.integers(1, 4)), 1000, int(rng.integers(1, 50))
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = rng.integers(t0 - 100, t0 + 12 * step_len, n)
    if seed % 2:
        ev.sort(order="t", kind="stable")
    ev["p"], ev["y"], ev["x"] = rng.integers(0, 3, n), rng.integers(0, 17, n), rng.integers(0, 13, n)
    h, w = 17 // ds, 13 // ds
    first = np.full(3 * h * w, sk.NO_SPIKE, np.int32)
    o, st = sk.sparse_from_fields(ev["t"], ev["p"], ev["y"], ev["x"], t0, step_len, ds, 3, h, w, 10, first)
    ref = naive.times_from_events(ev["p"].astype(int), ev["y"] // ds, ev["x"] // ds, (ev["t"] - t0) // step_len,
                                  3, h, w, 10)
    np.testing.assert_array_equal(sk.sparse_to_times(o, st, 3, h, w, 10), ref)
    assert (first == sk.NO_SPIKE).all()
    out = np.zeros(len(o), EVENT_DTYPE)
    sk.fill_events_(out["t"], out["x"], out["y"], out["p"], o, st, h, w, t0, step_len)
    c, y, x = np.nonzero(ref != sk.NO_SPIKE)
    expect = sorted(zip(t0 + ref[c, y, x].astype(np.int64) * step_len, c, y, x))
    assert [tuple(int(v) for v in r) for r in out[["t", "p", "y", "x"]]] == [tuple(int(v) for v in r) for r in expect]
