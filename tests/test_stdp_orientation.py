"""A learning outcome: STDP on a stream of moving oriented bars (scene renderer + DVS pixel
simulator) makes first-layer features orientation-selective.

Response R_f(θ): output spikes of map f (the layer's real output, after pointwise inhibition)
over test bars at orientation θ, both motion directions, 8 orientations 22.5° apart.
Selectivity index: vector strength SI_f = |Σ_θ R_f(θ) e^{2iθ}| / Σ_θ R_f(θ) (= 1 − circular
variance; 0 = no preference, 1 = responds to one orientation only), plus the classic
OSI_f = (R_pref − R_orth) / (R_pref + R_orth). The untrained layer (same seed, same threshold)
is the control.
"""

from __future__ import annotations

import numpy as np
import pytest

from spikeflow.drivers.scenes import moving_bars
from spikeflow.drivers.simulator import PixelParams, simulate
from spikeflow.nodes.encoders import polarity_times
from spikeflow.nodes.snn import NO_SPIKE, SpikingConv, Stdp
from spikeflow.service.events import time_slice

SIZE = 32
WINDOW_US = 5_000
T = 10
ORIENTATIONS = np.arange(8) * 22.5


def bar_events(angle_deg: float, seed: int) -> np.ndarray:
    frames, ts = moving_bars(angle_deg, size=SIZE, duration_us=90_000, speed_px_s=600.0, bar_width=3.0, seed=seed)
    return simulate(frames, ts, PixelParams(), seed=seed)


def windows(ev: np.ndarray) -> list[np.ndarray]:
    """Polarity-coded samples: 5 ms windows, first event per pixel and polarity, T = 10 steps."""
    out = []
    for ws in range(int(ev["t"][0]), int(ev["t"][-1]), WINDOW_US):
        w = time_slice(ev, ws, ws + WINDOW_US)
        if len(w) >= 20:
            out.append(polarity_times(w, 2, SIZE, SIZE, ws, WINDOW_US // T, T))
    return out


def make_layer() -> SpikingConv:
    return SpikingConv(2, 8, 7, 12.0, stdp=Stdp(a_plus=0.02, a_minus=-0.015, double_every=0, k=2, radius=8), seed=1)


def responses(layer: SpikingConv, test_sets) -> np.ndarray:
    r = np.zeros((layer.out_channels, len(ORIENTATIONS)))
    for j, samples in enumerate(test_sets):
        for s in samples:
            r[:, j] += (layer.forward(s, T).times != NO_SPIKE).sum(axis=(1, 2))
    return r


def vector_strength(r: np.ndarray) -> np.ndarray:
    z = (r * np.exp(2j * np.deg2rad(ORIENTATIONS))).sum(axis=1)
    return np.abs(z) / np.maximum(r.sum(axis=1), 1e-12)


def osi(r: np.ndarray) -> np.ndarray:
    pref = r.argmax(axis=1)
    rows = np.arange(len(r))
    rp, ro = r[rows, pref], r[rows, (pref + 4) % 8]
    return (rp - ro) / np.maximum(rp + ro, 1e-12)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    train = []
    for i in range(80):
        angle = float(rng.choice(ORIENTATIONS)) + 180.0 * int(rng.integers(0, 2))
        train += windows(bar_events(angle, seed=i))
    order = rng.permutation(len(train))
    layer = make_layer()
    history = [layer.convergence()]
    for _ in range(3):
        for i in order:
            layer.forward(train[i], T, learn=True)
        history.append(layer.convergence())
    tests = [windows(bar_events(a, 1000 + j)) + windows(bar_events(a + 180.0, 2000 + j))
             for j, a in enumerate(ORIENTATIONS)]
    return layer, history, tests


def test_training_stream_is_real_simulator_output():
    ev = bar_events(45.0, seed=3)
    assert len(ev) > 1000 and set(np.unique(ev["p"])) == {0, 1}
    assert (np.diff(ev["t"]) >= 0).all()
    assert len(windows(ev)) >= 10


def test_stdp_makes_first_layer_orientation_selective(trained):
    layer, history, tests = trained
    assert history[-1] < 0.3 * max(history)                         # weights converged (C fell)
    r_trained = responses(layer, tests)
    r_control = responses(make_layer(), tests)
    si, si0 = vector_strength(r_trained), vector_strength(r_control)
    assert (r_trained.sum(axis=1) > 0).all()                         # every map takes part
    assert np.median(si) >= 0.55, si
    assert np.median(si0) <= 0.40, si0
    assert np.median(si) - np.median(si0) >= 0.25
    assert np.median(osi(r_trained)) >= 0.9
    # the maps prefer different orientations (at least 4 of the 8 test orientations are someone's preference)
    assert len(set(r_trained.argmax(axis=1))) >= 4


def test_learned_fields_are_near_binary(trained):
    layer, _, _ = trained
    w = layer.weights
    assert ((w < 0.1) | (w > 0.9)).mean() > 0.75
