"""DVS pixel simulator: kernel vs naive twin, and the physics of the pixel model."""

from __future__ import annotations

import numpy as np
import pytest

import naive_sim as N
from spikeflow.drivers import sim_kernels as K
from spikeflow.drivers.simulator import DvsSimulator, PixelParams, simulate
from spikeflow.service.errors import ParamError
from spikeflow.service.events import EVENT_DTYPE, is_sorted


def _tuples(ev):
    return sorted(zip(ev["t"].tolist(), ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist()))


def _ramp(values, t_us):
    """A 1×1 video with the given linear intensities."""
    return np.asarray(values, float).reshape(-1, 1, 1), np.asarray(t_us, np.int64)


# -- kernel against its slow twin --------------------------------------------------------------

@pytest.mark.parametrize("case", range(10))
def test_kernel_matches_naive_twin(case):
    rng = np.random.default_rng(100 + case)
    n_t, h, w = 5, 3, 4
    frames = rng.random((n_t, h, w)) * rng.uniform(0.2, 1.0) + 0.02
    t_us = np.cumsum(rng.integers(40, 300, n_t)).astype(np.int64)
    params = PixelParams(contrast_on=float(rng.uniform(0.1, 0.3)), contrast_off=float(rng.uniform(0.1, 0.3)),
                         refractory_us=int(rng.choice([0, 5, 30])),
                         leak_rate_hz=float(rng.choice([0.0, 500.0])))
    sim = DvsSimulator(w, h, params, seed=case)
    ev = sim.feed_many(frames, t_us)
    logs = np.log(frames + params.log_eps)
    ref0 = logs[0] - (sim._leak_phase * sim.thr_on if params.leak_rate_hz > 0 else 0.0)
    want = N.dvs_events(logs, t_us, ref0, sim.thr_on, sim.thr_off, sim.leak_per_us, params.refractory_us)
    assert len(ev) > 0
    assert _tuples(ev) == sorted(want)
    assert is_sorted(ev)


@pytest.mark.parametrize("seed", [0, 3, 12345])
def test_shot_noise_matches_naive_twin(seed):
    h, w = 4, 5
    params = PixelParams(shot_noise_rate_hz=300.0)
    t_us = np.arange(0, 20_001, 1000, dtype=np.int64)
    frames = np.full((len(t_us), h, w), 0.5)
    ev = simulate(frames, t_us, params, seed=seed, chunk_frames=7)
    want = N.shot_noise(seed, 300.0, 0, int(t_us[-1]), h, w)
    assert len(want) > 50
    assert _tuples(ev) == sorted(want)


def test_hash_matches_twin():
    for args in [(0, 0, 0, 0), (7, 1, 123, 9), (2**63 - 1, 0, 16383, 10**9)]:
        assert K.hash_uniform(*args) == N.hash_uniform(*args)
        assert 0.0 < K.hash_uniform(*args) < 1.0


def test_lowpass_matches_twin():
    rng = np.random.default_rng(5)
    logs = rng.standard_normal((6, 3, 3))
    t_us = np.cumsum(rng.integers(100, 2000, 6)).astype(np.int64)
    state = rng.standard_normal((3, 3))
    want, want_state = N.lowpass_log(logs, t_us, state, 0, 80.0)
    got = logs.copy()
    st = state.copy()
    K.lowpass_log_(got, t_us, st, 0, 80.0)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(st, want_state, rtol=1e-12)


# -- physics -----------------------------------------------------------------------------------

@pytest.mark.parametrize("k, polarity", [(1, 1), (4, 1), (7, 0), (3, 0)])
def test_log_ramp_gives_k_events_at_interpolated_times(k, polarity):
    thr = 0.2
    params = PixelParams(contrast_on=thr, contrast_off=thr, threshold_sigma=0.0)
    eps = params.log_eps
    step = (k + 0.5) * thr * (1 if polarity else -1)
    i0 = 0.5
    i1 = (i0 + eps) * np.exp(step) - eps  # log(I + eps) moves by exactly `step`
    frames, t_us = _ramp([i0, i1], [1000, 11000])
    ev = simulate(frames, t_us, params)
    assert len(ev) == k
    assert np.all(ev["p"] == polarity)
    want_t = 1000 + 10000 * np.arange(1, k + 1) / (k + 0.5)
    assert np.all(np.abs(ev["t"] - want_t) <= 1)


def test_refractory_period_spaces_events_and_delays_not_loses():
    thr, refr = 0.2, 300
    params = PixelParams(contrast_on=thr, threshold_sigma=0.0, refractory_us=refr)
    eps = params.log_eps
    i1 = (0.1 + eps) * np.exp(5.5 * thr) - eps  # 5 crossings within the first 100 µs
    frames, t_us = _ramp([0.1, i1, i1], [0, 100, 5000])
    ev = simulate(frames, t_us, params)
    assert len(ev) == 5  # delayed by the refractory period, none lost
    assert np.all(np.diff(ev["t"]) == refr)
    assert ev["t"][0] == 100 // 5.5  # first crossing at its interpolated time


def test_static_scene_without_noise_is_silent():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32))
    frames = np.repeat(img[None], 50, axis=0)
    ev = simulate(frames, np.arange(50) * 1000, PixelParams(threshold_sigma=0.05, refractory_us=10))
    assert len(ev) == 0


def test_shot_noise_rate_matches_parameter():
    rate_hz, h, w, dur_us = 5.0, 64, 64, 1_000_000
    frames = np.full((11, h, w), 0.3)
    t_us = np.linspace(0, dur_us, 11).astype(np.int64)
    ev = simulate(frames, t_us, PixelParams(shot_noise_rate_hz=rate_hz), seed=4)
    expected = rate_hz * h * w * dur_us * 1e-6
    assert abs(len(ev) - expected) < 4 * np.sqrt(expected)  # Poisson: 4 sigma
    on = ev["p"].mean()
    assert abs(on - 0.5) < 4 * 0.5 / np.sqrt(len(ev))
    # uniform over pixels and time: each quarter of the image and of the second gets ~1/4
    assert abs(np.mean(ev["x"] < w // 2) - 0.5) < 0.03
    assert abs(np.mean(ev["t"] < dur_us // 2) - 0.5) < 0.03


def test_leak_gives_on_events_at_leak_rate():
    rate_hz, h, w, dur_us = 4.0, 32, 32, 2_000_000
    frames = np.full((21, h, w), 0.3)
    t_us = np.linspace(0, dur_us, 21).astype(np.int64)
    ev = simulate(frames, t_us, PixelParams(leak_rate_hz=rate_hz, leak_jitter=0.0), seed=1)
    assert np.all(ev["p"] == 1)
    per_pixel = np.bincount(ev["y"].astype(int) * w + ev["x"], minlength=h * w)
    # each pixel fires every 1/rate s, desynchronised by its random leak phase
    assert set(per_pixel.tolist()) <= {7, 8, 9}
    assert abs(len(ev) / (h * w) - rate_hz * dur_us * 1e-6) < 0.5


def test_threshold_mismatch_spread_and_determinism():
    params = PixelParams(threshold_sigma=0.05, shot_noise_rate_hz=2.0)
    a = DvsSimulator(64, 64, params, seed=9)
    assert abs(a.thr_on.std() - 0.05) < 0.005
    assert abs(a.thr_on.mean() - 0.2) < 0.005
    rng = np.random.default_rng(1)
    frames = np.cumsum(rng.random((20, 64, 64)) * 0.1, axis=0)
    t_us = np.arange(20) * 2000
    e1 = simulate(frames, t_us, params, seed=9)
    e2 = simulate(frames, t_us, params, seed=9)
    e3 = simulate(frames, t_us, params, seed=10)
    assert len(e1) > 1000
    assert np.array_equal(e1, e2)
    assert not np.array_equal(e1, e3)


def test_feed_one_by_one_equals_whole_video():
    rng = np.random.default_rng(3)
    frames = rng.random((30, 16, 20)) + 0.05
    t_us = np.cumsum(rng.integers(100, 1000, 30))
    params = PixelParams(refractory_us=50, leak_rate_hz=20.0, shot_noise_rate_hz=50.0)
    whole = simulate(frames, t_us, params, seed=2)
    sim = DvsSimulator(20, 16, params, seed=2)
    parts = [sim.feed(f, t) for f, t in zip(frames, t_us)]
    assert len(parts[0]) == 0  # the first frame only sets the reference
    assert np.array_equal(np.concatenate(parts), whole)
    for prev, frame_t, part in zip(t_us[:-1], t_us[1:], parts[1:]):
        assert np.all((part["t"] >= prev) & (part["t"] < frame_t))


def test_output_larger_than_first_buffer():
    frames = np.stack([np.full((128, 128), 0.001), np.ones((128, 128))])
    params = PixelParams(threshold_sigma=0.0)
    ev = simulate(frames, [0, 1000], params)
    per_pixel = int(np.floor((np.log(1 + 1e-3) - np.log(2e-3)) / 0.2))
    assert len(ev) == 128 * 128 * per_pixel > (1 << 16)
    assert ev.dtype == EVENT_DTYPE and is_sorted(ev)


def test_lowpass_filter_attenuates_a_flash():
    frames = np.full((40, 8, 8), 0.2)
    frames[20] = 0.8  # a 1 ms flash
    t_us = np.arange(40) * 1000
    fast = simulate(frames, t_us, PixelParams(threshold_sigma=0.0))
    slow = simulate(frames, t_us, PixelParams(threshold_sigma=0.0, cutoff_hz=30.0))
    assert np.sum(fast["p"] == 1) == 64 * int(np.log(0.801 / 0.201) / 0.2)
    assert 0 < len(slow) < len(fast) / 2


def test_integer_frames_are_scaled_to_unit_range():
    f8 = np.array([[[51]], [[204]]], np.uint8)
    ff = f8.astype(float) / 255
    assert np.array_equal(simulate(f8, [0, 500]), simulate(ff, [0, 500]))


def test_bad_input_raises_param_errors_naming_the_key():
    with pytest.raises(ParamError, match="pixel.contrast_on"):
        PixelParams(contrast_on=0.0)
    with pytest.raises(ParamError, match="pixel.refractory_us"):
        PixelParams(refractory_us=-1)
    with pytest.raises(ParamError, match="simulator.seed"):
        DvsSimulator(4, 3, seed=-2)
    sim = DvsSimulator(4, 3)
    with pytest.raises(ParamError, match=r"expected shape \(T, 3, 4\)"):
        sim.feed_many(np.zeros((2, 4, 3)), [0, 1])
    with pytest.raises(ParamError, match=r"timestamps_us\[2\]"):
        sim.feed_many(np.zeros((3, 3, 4)), [0, 5, 5])
    with pytest.raises(ParamError, match="NaN"):
        sim.feed(np.full((3, 4), np.nan), 0)
    with pytest.raises(ParamError, match=">= 0"):
        sim.feed(np.full((3, 4), -1.0), 0)
    sim.feed(np.ones((3, 4)), 100)
    with pytest.raises(ParamError, match="not after"):
        sim.feed(np.ones((3, 4)), 100)


# -- `spikeflow simulate` (real subprocesses) --------------------------------------------------

def _cli(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "spikeflow", "simulate", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_video_equals_library(tmp_path):
    from spikeflow.drivers.recording import read_recording

    rng = np.random.default_rng(0)
    video = (np.cumsum(rng.random((12, 10, 14)), axis=0) * 20).astype(np.uint8)
    np.save(tmp_path / "v.npy", video)
    out = tmp_path / "v.sfe"
    res = _cli("video", tmp_path / "v.npy", "--fps", 250, "--refractory-us", 100, "--seed", 4, "-o", out,
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ev, info = read_recording(out)
    want = simulate(video, np.arange(12) * 4000, PixelParams(refractory_us=100), seed=4)
    assert len(want) > 100 and np.array_equal(ev, want)
    assert tuple(info.sensor_size) == (14, 10, 2)
    assert f"{len(want)} events" in res.stdout


def test_cli_bars_and_gesture(tmp_path):
    from spikeflow.drivers.recording import read_recording

    res = _cli("bars", "--angle", 90, "--size", 24, "--duration-us", 200_000, "-o", tmp_path / "b.sfe", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ev, info = read_recording(tmp_path / "b.sfe")
    assert len(ev) > 100 and info.extra["angle_deg"] == 90.0
    assert np.ptp(ev["y"]) > 3 * np.median(np.abs(np.diff(ev["x"][:200])) + 1)  # a vertical bar
    res = _cli("gesture", "--class", 4, "--duration-us", 100_000, "--size", 64, "-o", tmp_path / "g.sfe", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ev, info = read_recording(tmp_path / "g.sfe")
    assert info.extra["label"] == 4 and info.extra["name"] == "right_arm_clockwise" and len(ev) > 0


def test_cli_errors_name_the_key(tmp_path):
    res = _cli("gesture", "--class", 12, "-o", tmp_path / "x.sfe", cwd=tmp_path)
    assert res.returncode == 2 and "gesture.class_id" in res.stderr
    np.save(tmp_path / "flat.npy", np.zeros((3, 4)))
    res = _cli("video", tmp_path / "flat.npy", "--fps", 30, "-o", tmp_path / "x.sfe", cwd=tmp_path)
    assert res.returncode == 2 and "(T, H, W)" in res.stderr
    res = _cli("video", tmp_path / "missing.npy", "--fps", 30, "-o", tmp_path / "x.sfe", cwd=tmp_path)
    assert res.returncode == 2 and "missing.npy" in res.stderr


def test_cli_saccade_over_real_image(tmp_path, shared):
    from spikeflow.drivers.recording import read_recording

    img = shared("images/eth80-cup-dog/cup/cup1-000-000.png")
    res = _cli("saccade", img, "--amplitude", 2, "--duration-us", 150_000, "-o", tmp_path / "c.sfe", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ev, info = read_recording(tmp_path / "c.sfe")
    assert tuple(info.sensor_size) == (70, 70, 2)  # 64 + 2 * (2 + 1)
    assert len(ev) > 500 and ev["t"].max() < 150_000
