"""``spikeflow inspect``: receptive-field PNGs from learned state, as a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from spikeflow.nodes.learned_state import load_state, save_state
from spikeflow.nodes.snn import NO_SPIKE, Network
from spikeflow.service.cli_inspect import mosaic, receptive_fields


@pytest.fixture
def weights_file(tmp_path):
    rng = np.random.default_rng(0)
    net = Network.kheradpisheh((2, 20, 20), conv1=6, conv2=10, threshold1=5.0, threshold2=2.0)
    samples = []
    for _ in range(4):
        t = rng.integers(0, 15, (2, 20, 20)).astype(np.int32)
        t[rng.random(t.shape) < 0.5] = NO_SPIKE
        samples.append((t, 15))
    net.train_layer(samples, "conv1")
    net.train_layer(samples, "conv2")
    return net, net.save(tmp_path / "weights.npz")


def inspect(*argv):
    return subprocess.run([sys.executable, "-m", "spikeflow", "inspect", *map(str, argv)], capture_output=True,
                          text=True, timeout=120)


def test_inspect_writes_a_png_of_every_layer(weights_file, tmp_path):
    import matplotlib.image as mpimg

    net, path = weights_file
    out = tmp_path / "fields.png"
    res = inspect(path, "-o", out, "--dpi", 50)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.shape[0] == 8 * 50 and img.shape[1] == 8 * 50          # 2 layers x 4 in tall, 8 in wide
    assert "conv1: 6 maps, fields 5x5 px" in res.stdout
    # conv2 fields in input pixels: (5-1)*2 (pool stride) + 5
    assert "conv2: 10 maps, fields 13x13 px" in res.stdout
    assert "1 samples learned" not in res.stdout and "4 samples learned" in res.stdout
    c1 = net.layer("conv1").convergence()
    assert f"C={c1:.4f}" in res.stdout


def test_receptive_fields_are_the_weights_back_projected(weights_file):
    net, path = weights_file
    layers, meta = load_state(path)
    fields = receptive_fields(layers, meta)
    w1 = net.layer("conv1").weights
    w2 = net.layer("conv2").weights
    np.testing.assert_allclose(fields["conv1"], w1[:, 0] - w1[:, 1])
    # one conv2 synapse (map c, tap (1, 2)) alone reproduces conv1's field c shifted by stride 2
    only = {**layers, "conv2": {**layers["conv2"], "weights": np.zeros_like(w2)}}
    only["conv2"]["weights"][3, 4, 1, 2] = 1.0
    f = receptive_fields(only, meta)["conv2"][3]
    expect = np.zeros((13, 13))
    expect[2:7, 4:9] = w1[4, 0] - w1[4, 1]
    np.testing.assert_allclose(f, expect)
    m = mosaic(fields["conv1"], cols=3)
    assert m.shape == (2 * 6 - 1, 3 * 6 - 1) and np.nanmax(np.abs(m)) == pytest.approx(1.0)


def test_inspect_layer_selection_and_errors(weights_file, tmp_path):
    _, path = weights_file
    res = inspect(path, "--layers", "conv2", "-o", tmp_path / "c2.png")
    assert res.returncode == 0 and "conv1" not in res.stdout and (tmp_path / "c2.png").exists()
    res = inspect(path, "--layers", "conv9")
    assert res.returncode == 2 and "conv9" in res.stderr
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00" * 10)
    res = inspect(junk)
    assert res.returncode == 2 and "junk.npz" in res.stderr
    layers, meta = load_state(path)
    layers["conv2"]["weights"] = np.zeros((10, 7, 5, 5))
    save_state(tmp_path / "bad.npz", layers, meta)
    res = inspect(tmp_path / "bad.npz")
    assert res.returncode == 2 and "bad.npz" in res.stderr and "conv2/weights" in res.stderr
