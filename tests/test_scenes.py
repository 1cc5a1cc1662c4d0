"""Procedural scenes: oriented moving bars and saccades over a real ETH-80 image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikeflow.drivers.scenes import moving_bars, saccade_frames
from spikeflow.drivers.simulator import PixelParams, simulate
from spikeflow.service.errors import ParamError

IDEAL = PixelParams(threshold_sigma=0.02)


def _axis_deg(x, y):
    """Orientation (deg, [0, 180), y up) of the principal axis of a point cloud."""
    w, v = np.linalg.eigh(np.cov(np.stack([x, y])))
    return math.degrees(math.atan2(v[1, 1], v[0, 1])) % 180


def _angle_diff(a, b):
    d = abs(a - b) % 180
    return min(d, 180 - d)


@pytest.mark.parametrize("angle", [0, 22.5, 45, 60, 90, 135, 160])
def test_bar_events_lie_along_the_bar_orientation(angle):
    size = 32
    frames, t_us = moving_bars(angle, size=size, duration_us=500_000, speed_px_s=100, bar_width=3, seed=2)
    ev = simulate(frames, t_us, IDEAL, seed=2)
    t_mid = np.median(ev["t"])  # the sweep is symmetric: the bar crosses the centre mid-way
    m = np.abs(ev["t"] - t_mid) < 15_000
    c = (size - 1) / 2
    got = _axis_deg(ev["x"][m] - c, c - ev["y"][m])
    assert _angle_diff(got, angle) < 4


@pytest.mark.parametrize("angle, speed", [(0, 80.0), (70, 120.0), (200, 60.0), (45, -100.0)])
def test_bar_moves_along_its_normal_at_its_speed(angle, speed):
    size = 48
    frames, t_us = moving_bars(angle, size=size, duration_us=600_000, speed_px_s=speed, seed=0)
    ev = simulate(frames, t_us, IDEAL)
    th = math.radians(angle)
    c = (size - 1) / 2
    proj = -(ev["x"] - c) * math.sin(th) + (c - ev["y"]) * math.cos(th)
    # centroid position along the normal over 40 ms bins, in the middle of the sweep
    bins = np.arange(150_000, 450_001, 40_000)
    idx = np.digitize(ev["t"], bins)
    pos = np.array([proj[idx == k].mean() for k in range(1, len(bins))])
    slope = np.polyfit(bins[:-1] * 1e-6, pos, 1)[0]
    assert slope == pytest.approx(speed, rel=0.1)
    # a bright bar: ON events at its leading edge, OFF at its trailing edge
    m = (ev["t"] > 250_000) & (ev["t"] < 350_000)
    on_front = np.mean(proj[m & (ev["p"] == 1)]) - np.mean(proj[m & (ev["p"] == 0)])
    assert np.sign(on_front) == np.sign(speed)


def test_grating_is_periodic_and_seeded():
    f1, t1 = moving_bars(30, size=40, duration_us=100_000, speed_px_s=50, spacing_px=10, seed=1)
    f2, _ = moving_bars(30, size=40, duration_us=100_000, speed_px_s=50, spacing_px=10, seed=1)
    f3, _ = moving_bars(30, size=40, duration_us=100_000, speed_px_s=50, spacing_px=10, seed=2)
    assert f1.shape == (101, 40, 40) and f1.dtype == np.float32 and t1[-1] == 100_000
    assert np.array_equal(f1, f2) and not np.array_equal(f1, f3)
    assert f1.min() == pytest.approx(0.2) and f1.max() == pytest.approx(0.8)
    # after one period of motion (10 px at 50 px/s = 200 ms) the grating repeats
    fa, _ = moving_bars(30, size=40, duration_us=200_000, speed_px_s=50, spacing_px=10, seed=1, fps=100)
    np.testing.assert_allclose(fa[0], fa[-1], atol=1e-5)
    # bright area fraction = bar width / period
    assert np.mean(f1[0] > 0.5) == pytest.approx(0.3, abs=0.05)


def _eth80(shared):
    import matplotlib.image as mpimg

    return mpimg.imread(shared("images/eth80-cup-dog/dog/dog1-000-000.png"))


def test_saccades_over_real_image(shared):
    img = _eth80(shared)
    frames, t_us = saccade_frames(img, duration_us=300_000, seed=3, amplitude_px=3.0)
    assert frames.shape == (301, 72, 72)  # padded by ceil(3) + 1 on each side
    np.testing.assert_allclose(frames[0], frames[-1], atol=1e-6)  # a closed triangle
    ev = simulate(frames, t_us, IDEAL, seed=3)
    assert len(ev) > 1000
    # three saccades, each stopping at a vertex: the event rate dips at 1/3 and 2/3
    rate = np.histogram(ev["t"], bins=np.linspace(0, 300_000, 31))[0]
    for k in (10, 20):
        assert rate[k - 1:k + 1].sum() < 0.5 * rate[k - 5:k - 3].sum()
        assert rate[k - 1:k + 1].sum() < 0.5 * rate[k + 3:k + 5].sum()
    # events come from the image's edges: they correlate with the gradient magnitude
    g = np.hypot(*np.gradient(frames[0].astype(float)))
    counts = np.zeros_like(g)
    np.add.at(counts, (ev["y"], ev["x"]), 1)
    assert np.corrcoef(g.ravel(), counts.ravel())[0, 1] > 0.5


def test_saccade_seed_and_mnist_geometry():
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a "1"
    a, t = saccade_frames(digit, amplitude_px=2.0, seed=0)
    b, _ = saccade_frames(digit, amplitude_px=2.0, seed=0)
    c, _ = saccade_frames(digit, amplitude_px=2.0, seed=1)
    assert a.shape[1:] == (34, 34)  # 28 + 2 * 3, as N-MNIST
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and t[0] == 0 and t[-1] == 300_000


def test_scene_bad_input():
    with pytest.raises(ParamError, match="scene.angle_deg"):
        moving_bars(float("nan"))
    with pytest.raises(ParamError, match="scene.spacing_px"):
        moving_bars(0, bar_width=4, spacing_px=3)
    with pytest.raises(ParamError, match="scene.duration_us"):
        moving_bars(0, duration_us=0)
    with pytest.raises(ParamError, match="image"):
        saccade_frames(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ParamError, match="scene.amplitude_px"):
        saccade_frames(np.zeros((8, 8)), amplitude_px=-1)
