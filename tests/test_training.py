"""Training and evaluation end to end on the bundled simulated gestures: accuracy well above
chance, reproducibility by seed, checkpoint and resume, model bundles, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from spikeflow.drivers.datasets import bundled_gestures
from spikeflow.service.errors import GraphError, ModelError
from spikeflow.service.model import load_bundle, save_bundle
from spikeflow.service.training import TrainConfig, checkpoint_path, evaluate, train

GRAPH = "gesture"


def _graph():
    from spikeflow.service.cli_train import builtin_graph

    return builtin_graph(GRAPH)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "model.npz"
    res = train(_graph(), bundled_gestures("train"), str(out), TrainConfig(max_samples=22, seed=0),
                data_spec="bundled")
    return out, res


def test_small_gesture_model_is_well_above_chance(trained):
    out, res = trained
    assert res.n_samples == 22 and res.n_windows > 200
    ev = evaluate(str(out), bundled_gestures("test"))
    # 11 classes: chance is 9 %; measured 95 % (21/22) with this seed and subset
    assert ev.accuracy >= 0.75, ev.per_class_accuracy
    assert ev.decision_accuracy >= 0.6
    assert ev.latency_ms["onset_to_first_correct_p50_ms"] is not None
    assert ev.latency_ms["onset_to_first_correct_p50_ms"] <= 500
    assert sum(map(sum, ev.confusion)) == 22
    assert ev.throughput["real_time_factor"] > 1.0


def test_bundle_holds_graph_state_and_metadata(trained):
    out, _ = trained
    b = load_bundle(out)
    assert "[nodes.conv1]" in b.graph_text
    assert b.node_state("conv1")["weights"].shape[0] == 16
    assert list(b.node_state("cls")["class_names"])[:2] == ["hand_clapping", "right_hand_wave"]
    assert b.meta["data"] == "bundled" and b.meta["config"]["seed"] == 0
    assert {"spikeflow", "numpy", "numba"} <= set(b.meta["versions"])


def test_same_seed_same_weights(tmp_path):
    cfg = TrainConfig(max_samples=6, seed=3)
    a = train(_graph(), bundled_gestures("train"), str(tmp_path / "a.npz"), cfg)
    b = train(_graph(), bundled_gestures("train"), str(tmp_path / "b.npz"), cfg)
    sa, sb = load_bundle(a.bundle_path).state, load_bundle(b.bundle_path).state
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k


def test_interrupt_leaves_checkpoint_and_resume_matches(tmp_path):
    cfg = TrainConfig(max_samples=6, seed=1, epochs=2)
    full = train(_graph(), bundled_gestures("train"), str(tmp_path / "full.npz"), cfg)
    out = tmp_path / "cut.npz"
    calls = []

    def progress(stage, done, total):  # Ctrl-C in the middle of conv1's second epoch
        calls.append(stage)
        if stage.startswith("stdp conv1 epoch 2") and done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_graph(), bundled_gestures("train"), str(out), cfg, progress=progress)
    ck = checkpoint_path(out)
    assert ck.exists() and not out.exists()
    assert load_bundle(ck).meta["done_epochs"] == {"conv1": 1}
    resumed = train(_graph(), bundled_gestures("train"), str(out), cfg, resume=str(ck))
    assert not ck.exists()
    sf, sr = load_bundle(full.bundle_path).state, load_bundle(resumed.bundle_path).state
    for k in ("conv1/weights", "conv2/weights"):
        assert np.array_equal(sf[k], sr[k]), k


def test_graph_without_classifier_is_rejected(tmp_path):
    text = (tmp_path / "g.toml")
    text.write_text('[nodes.src]\ntype = "replay"\nparams = { path = "x.sfe" }\n')
    with pytest.raises(GraphError, match="exactly one classifier"):
        train(str(text), bundled_gestures("train"), str(tmp_path / "m.npz"))


def test_bundle_errors_name_the_file(tmp_path):
    bad = tmp_path / "w.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ModelError, match="w.npz: not a model bundle"):
        load_bundle(bad)
    with pytest.raises(ModelError, match="must end in .npz"):
        save_bundle(tmp_path / "m.bin", "", {}, {})


def test_train_and_eval_cli(tmp_path):
    model = tmp_path / "m.npz"
    r = subprocess.run([sys.executable, "-m", "spikeflow", "train", "--max-samples", "11", "-o", str(model),
                        "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "model bundle:" in r.stdout and model.exists()
    r = subprocess.run([sys.executable, "-m", "spikeflow", "eval", str(model), "--max-samples", "11",
                        "-o", str(tmp_path / "rep"), "--quiet", "--split", "test"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["meta"]["n_samples"] == 11 and 0.0 <= rep["accuracy"] <= 1.0
    assert (tmp_path / "rep" / "confusion.png").stat().st_size > 1000
    assert "accuracy" in (tmp_path / "rep" / "report.md").read_text()


def test_loihi_report_reads_model_bundles():
    """`spikeflow loihi report MODEL.npz` maps the bundle's own graph with its learned weights."""
    from pathlib import Path

    from spikeflow.service.cli_loihi_report import load_net
    from spikeflow.service.model import bundled_model_path

    path = bundled_model_path()
    net, encoder = load_net(Path(path))
    b = load_bundle(path)
    assert [layer.name for layer in net.conv_layers] == ["conv1", "conv2"]
    assert np.array_equal(net.layer("conv1").state()["weights"], b.node_state("conv1")["weights"])
    assert encoder is not None and encoder[2].name == "enc"
