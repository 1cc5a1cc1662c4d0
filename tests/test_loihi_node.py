"""The loihi_emulator node and `spikeflow loihi report` on real recordings and the real spiking layers."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from spikeflow.nodes.base import PortMeta, build_params
from spikeflow.nodes.loihi import LoihiEmulator
from spikeflow.nodes.loihi_costs import load_profile
from spikeflow.nodes.loihi_mapping import map_network
from spikeflow.nodes.loihi_model import run_traffic
from spikeflow.service import registry
from spikeflow.service.errors import GraphError, ModelError, ParamError
from spikeflow.service.events import SensorSize, make_events
from spikeflow.service.packet import events_packet

TINY = [{"name": "in", "type": "input", "in_shape": [1, 4, 4], "out_shape": [1, 4, 4]},
        {"name": "c1", "type": "conv", "in_shape": [1, 4, 4], "out_shape": [2, 3, 3], "kernel": [2, 2]},
        {"name": "p1", "type": "pool", "in_shape": [2, 3, 3], "out_shape": [2, 1, 1], "kernel": [3, 3], "stride": 3}]


def emulator(**params):
    raw = {"layers": TINY, "timestep_us": 1000, "window_us": 2000, **params}
    node = LoihiEmulator("emu", build_params(LoihiEmulator, raw, key="nodes.emu.params"))
    node.setup({"spikes_in": PortMeta("spikes", SensorSize(4, 4, 1))})
    return node


def spikes(layer, t, x, y, p, t0, t1, seq=0, stream=None, size=(4, 4, 1), tag=True):
    pk = events_packet(make_events(t, x, y, p), stream or "", seq, size, t0, t1, kind="spikes")
    if tag:
        pk.data["layer"] = layer
    return pk


def test_registered_and_described():
    assert registry.get("loihi_emulator") is LoihiEmulator
    assert LoihiEmulator.outputs == {"metrics_out": "metrics"}
    assert "spikes_in" in LoihiEmulator.inputs and "spikes_in_1" in LoihiEmulator.optional_inputs


def test_window_metrics_equal_the_hand_computed_network():
    node = emulator()
    out = node.process("spikes_in", spikes("in", [0, 10, 1500], [1, 0, 2], [1, 0, 2], [0, 0, 0], 0, 2000))
    assert out == {}                                              # window [0, 2000) not complete yet
    out = node.process("spikes_in", spikes("c1", [20], [0], [0], [1], 0, 2000, size=(3, 3, 2)))
    assert out == {}                                              # p1 has not reported yet
    out = node.process("spikes_in", spikes("p1", [], [], [], [], 0, 2000, size=(1, 1, 2)))
    win, cum = out["metrics_out"]
    assert (win.kind, win.data["scope"], cum.data["scope"]) == ("metrics", "window", "cumulative")
    assert (win.t0_us, win.t1_us, win.seq, cum.seq) == (0, 2000, 0, 1)
    d = win.data
    assert (d["n_syn_ops"], d["n_active"], d["n_inactive"], d["n_within_tile"]) == (19, 17, 23, 4)
    assert d["energy_uj"] == pytest.approx(3028.2e-6)
    assert d["latency_ms"] == pytest.approx(533.6e-6)
    assert d["energy_syn_spike_uj"] == pytest.approx(19 * 23.6e-6)
    assert cum.data["energy_uj"] == pytest.approx(3028.2e-6) and cum.data["windows"] == 1
    assert node.stats() | {"scope": "cumulative"} == cum.data and node.stats()["cores"] == 2


def test_empty_windows_still_cost_neuron_updates_and_flush_emits_the_rest():
    node = emulator(taps=["in"])
    node.process("spikes_in", spikes("in", [0], [0], [0], [0], 0, 1000))
    out = node.process("spikes_in", spikes("in", [6500], [0], [0], [0], 1000, 7000, seq=1))
    wins = [p for p in out["metrics_out"] if p.data["scope"] == "window"]
    assert [p.data["window"] for p in wins] == [0, 1, 2]          # [4000, 6000) had no spikes
    assert wins[1].data["n_syn_ops"] == 0 and wins[1].data["n_inactive"] == 2 * 20
    assert wins[1].data["energy_uj"] == pytest.approx(40 * 52.0e-6)
    rest = node.flush()["metrics_out"]
    assert [p.data.get("window") for p in rest] == [3, None]
    assert rest[0].data["n_syn_ops"] == 2
    total = sum(p.data["energy_uj"] for p in wins + rest[:1])
    assert node.stats()["energy_uj"] == pytest.approx(total) and node.stats()["windows"] == 4
    assert node.flush() == {}


def test_layer_from_stream_name_and_port_taps():
    node = emulator(taps=["in", "c1"])
    node.setup({"spikes_in": PortMeta("spikes", SensorSize(4, 4, 1)),
                "spikes_in_1": PortMeta("spikes", SensorSize(3, 3, 2))})
    node.process("spikes_in", spikes("in", [0], [1], [1], [0], 0, 2000, tag=False))          # port 0 -> "in"
    out = node.process("spikes_in_1", spikes("c1", [20], [0], [0], [1], 0, 2000, tag=False, size=(3, 3, 2),
                                             stream="c1.spikes_out"))                       # stream name
    d = out["metrics_out"][0].data
    assert d["n_syn_ops"] == 8 + 1 and d["n_spikes_out"] == 1
    bad = emulator()
    with pytest.raises(ModelError, match="names no known layer"):
        bad.process("spikes_in", spikes("x", [0], [0], [0], [0], 0, 10, tag=False, stream="other.spikes_out"))


def test_bad_params_and_inputs():
    with pytest.raises(ParamError, match="window_us"):
        emulator(window_us=500)
    with pytest.raises(ParamError, match="taps\\[0\\]"):
        emulator(taps=["nope"])
    with pytest.raises(ParamError, match="layers\\[1\\]"):
        emulator(layers=[TINY[0], "c9"])
    with pytest.raises(GraphError, match="layers\\[1\\].out_shape"):
        emulator(layers=[TINY[0], {**TINY[1], "out_shape": [2, 4, 4]}])
    with pytest.raises(ParamError, match="weight_bits"):
        emulator(weight_bits=12)
    node = LoihiEmulator("emu", build_params(LoihiEmulator, {"layers": TINY, "taps": ["c1"]}))
    with pytest.raises(GraphError, match="inputs.spikes_in"):
        node.setup({"spikes_in": PortMeta("spikes", SensorSize(4, 4, 1))})            # c1's grid is 3x3
    node = emulator()
    with pytest.raises(ModelError, match="outside its output grid"):
        node.process("spikes_in", spikes("c1", [0], [5], [0], [0], 0, 10))


def test_params_from_a_graph_table_with_a_spec_file(tmp_path):
    spec = tmp_path / "net.toml"
    spec.write_text("".join(f"[[layers]]\n{_toml(d)}\n" for d in TINY))
    raw = tomllib.loads(f"""
layers = ["in", "c1", "p1"]
spec_file = "{spec}"
profile = "sanafe_loihi"
static_mw = 5.0
weight_bits = 4
timestep_us = 500
window_us = 1000
""")
    node = LoihiEmulator("emu", build_params(LoihiEmulator, raw, key="nodes.emu.params"))
    node.setup({"spikes_in": PortMeta("spikes", SensorSize(4, 4, 1))})
    assert node.profile.name == "sanafe_loihi" and node.profile.static_mw == 5.0
    assert node.mapping.weight_bits == 4
    out = node.flush()
    assert out == {}
    for layer, size in (("in", (4, 4, 1)), ("c1", (3, 3, 2)), ("p1", (1, 1, 2))):
        out = node.process("spikes_in", spikes(layer, [0] if layer == "in" else [],
                                               [1] if layer == "in" else [], [1] if layer == "in" else [],
                                               [0] if layer == "in" else [], 0, 1000, size=size))
    d = out["metrics_out"][0].data
    assert node.flush() == {}
    assert d["profile"] == "sanafe_loihi" and d["static_energy_uj"] > 0 and d["timesteps"] == 2
    missing = LoihiEmulator("emu", build_params(LoihiEmulator, {"spec_file": str(tmp_path / "no.toml")}))
    with pytest.raises(ParamError, match="spec_file"):
        missing.setup({})


def _toml(d):
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in d.items())


def network_and_sample(shared, path="recordings/slayer-nmnist/3.bs2", T=30):
    from spikeflow.drivers.recording import read_recording
    from spikeflow.nodes.snn import Network, events_from_times
    from spikeflow.service.cli_loihi_report import encode_events

    net = Network.kheradpisheh((2, 34, 34))
    ev, _ = read_recording(shared(path))
    t0 = int(ev["t"][0])
    step_us = -(-(int(ev["t"][-1]) - t0 + 1) // T)
    times = encode_events(ev, (2, 34, 34), t0, step_us, T, path)
    out = net.forward((times, T))
    layer_spikes = {"input": events_from_times(times, t0, step_us)}
    layer_spikes.update({n: events_from_times(t, t0, step_us) for n, t in out.times.items()})
    return net, layer_spikes, t0, step_us


def test_node_on_real_layers_matches_the_offline_model(shared):
    """Real N-MNIST through the real Kheradpisheh layers; their describe() bound into the node."""
    from spikeflow.nodes.snn import FirstSpikePoolNode, SpikingConvNode

    net, layer_spikes, t0, step_us = network_and_sample(shared)
    # the graph nodes of the spiking core describe themselves; the emulator binds them by name
    c1 = SpikingConvNode("conv1", build_params(SpikingConvNode, {"out_channels": 30, "kernel": 5, "padding": 2}))
    c1.setup({"spikes_in": PortMeta("spikes", SensorSize(34, 34, 2))})
    p1 = FirstSpikePoolNode("pool1", build_params(FirstSpikePoolNode, {"kernel": 2}))
    p1.setup({"spikes_in": PortMeta("spikes", SensorSize(34, 34, 30))})
    window = 30 * step_us
    node = LoihiEmulator("emu", build_params(LoihiEmulator, {
        "layers": [{"name": "input", "type": "input", "in_shape": [2, 34, 34], "out_shape": [2, 34, 34]},
                   "conv1", "pool1"], "weight_bits": 2, "timestep_us": step_us, "window_us": window}))
    node.bind_layers([c1.describe(), p1.describe()])
    node.setup({"spikes_in": PortMeta("spikes", SensorSize(34, 34, 2))})
    assert node.mapping.n_cores == 34 + 9
    pkts = []
    for name in ("input", "conv1", "pool1"):
        ev = layer_spikes[name]
        c = 2 if name == "input" else 30
        h = 17 if name == "pool1" else 34
        pk = events_packet(ev, f"{name}.spikes_out", 0, (h, h, c), t0, t0 + window, kind="spikes")
        pkts += node.process("spikes_in", pk).get("metrics_out", [])
    pkts += node.flush().get("metrics_out", [])
    win = [p for p in pkts if p.data["scope"] == "window"]
    assert len(win) == 1
    offline = map_network(node.mapping.layers, 2)
    res, _ = run_traffic(offline, load_profile(), {k: layer_spikes[k] for k in ("input", "conv1", "pool1")},
                         step_us, t0, t0 + window)
    assert win[0].data["energy_uj"] == pytest.approx(res.energy_uj)
    assert win[0].data["latency_ms"] == pytest.approx(res.latency_ns * 1e-6)
    assert win[0].data["n_syn_ops"] == res.counts["syn_ops"] > 0
    assert win[0].data["n_spikes_out"] == len(layer_spikes["conv1"]) + len(layer_spikes["pool1"])


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "spikeflow.service.cli", "loihi", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_report_on_a_model_bundle(shared, tmp_path):
    from spikeflow.nodes.snn import Network

    model = tmp_path / "model.npz"
    Network.kheradpisheh((2, 34, 34)).save(model)
    data = [str(shared(f"recordings/slayer-nmnist/{i}.bs2")) for i in (1, 2)]
    r = run_cli("report", str(model), "--data", *data, "--weight-bits", "2", "--fixed-point", "--repeats", "1",
                "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["mapping"]["cores_used"] == rep["mapping"]["cores_used"] <= 128 and rep["mapping"]["fits_one_chip"]
    assert [x["sample"] for x in rep["inferences"]] == data
    for inf in rep["inferences"]:
        assert inf["energy_uj"] > 0 and inf["latency_ms"] > 0 and inf["counts"]["syn_ops"] > 0
        assert inf["power_mw"] == pytest.approx(inf["energy_uj"] / inf["latency_ms"])
        assert inf["cpu"]["wall_ms"] > 0
        assert set(inf["fixed_point"]["layers"]) == {"conv1", "pool1", "conv2", "pool2"}
    assert rep["profile"]["ops"]["syn_spike"]["source"].startswith("Davies 2018 Table 2")
    rapl = rep["cpu_comparison"]["energy_note"]
    assert "RAPL" in rapl
    assert "energy uJ" in r.stdout and "CPU ms" in r.stdout and "mapping:" in r.stdout
    # the same inference computed through the Python API gives the same chip figures
    from spikeflow.drivers.recording import read_recording
    from spikeflow.service.cli_loihi_report import polarity_samples, report_network

    ev, _ = read_recording(data[0])
    api = report_network(Network.kheradpisheh((2, 34, 34)), polarity_samples(data[0], ev, (2, 34, 34), 30),
                         load_profile(), 2, repeats=1)
    assert api["inferences"][0]["energy_uj"] == pytest.approx(rep["inferences"][0]["energy_uj"])


def test_cli_reports_a_network_too_large_for_one_chip(shared, tmp_path):
    from spikeflow.nodes.snn import Network

    model = tmp_path / "model.npz"
    Network.kheradpisheh((2, 34, 34)).save(model)
    data = str(shared("recordings/slayer-nmnist/1.bs2"))
    r = run_cli("report", str(model), "--data", data, "--weight-bits", "8", cwd=tmp_path)
    assert r.returncode == 2
    assert "2 chips" in r.stderr and "cores > 128 per chip" in r.stderr
    r = run_cli("report", str(model), "--data", data, "--weight-bits", "8", "--multichip", "--repeats", "1",
                "--json", str(tmp_path / "m.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["mapping"]["chips"] == 2
    r = run_cli(cwd=tmp_path)
    assert r.returncode == 2 and "usage: spikeflow loihi report" in r.stderr


def test_cli_spec_mode_with_recorded_spikes(shared, tmp_path):
    from spikeflow.drivers.recording import open_writer

    net, layer_spikes, t0, step_us = network_and_sample(shared)
    spec = tmp_path / "spec.toml"
    layers = [{"name": "input", "type": "input", "in_shape": [2, 34, 34], "out_shape": [2, 34, 34]}] + \
        [{k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v is not None} for d in net.describe()]
    spec.write_text("".join(f"[[layers]]\n{_toml(d)}\n" for d in layers))
    files = []
    for name, c, h in (("input", 2, 34), ("conv1", 30, 34), ("pool1", 30, 17), ("conv2", 100, 17), ("pool2", 100, 8)):
        f = tmp_path / f"{name}.sfe"
        with open_writer(f, (h, h, c)) as w:
            w.write(layer_spikes[name])
        files += ["--spikes", f"{name}={f}"]
    r = run_cli("report", str(spec), *files, "--weight-bits", "2", "--profile", "sanafe_loihi",
                "--json", str(tmp_path / "s.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "s.json").read_text())
    inf = rep["inferences"][0]
    assert inf["spikes"] == {k: len(v) for k, v in layer_spikes.items()}
    assert inf["cpu"]["wall_ms"] is None and "SPEC mode" in rep["cpu_comparison"]["workload"]
    assert rep["profile"]["name"] == "sanafe_loihi"
    r = run_cli("report", str(spec), cwd=tmp_path)
    assert r.returncode == 2 and "--spikes" in r.stderr


NET_GRAPH = """
[graph]
name = "loihi-test"
[nodes.src]
type = "replay"
params = {{ path = "{data}", speed = 0.0, window_us = 10000 }}
[nodes.enc]
type = "polarity_encoder"
inputs = {{ events_in = "src.events_out" }}
params = {{ window_us = 100000, time_steps = 20 }}
[nodes.conv1]
type = "snn_conv"
inputs = {{ spikes_in = "enc.spikes_out" }}
params = {{ out_channels = 8, kernel = 5, padding = 2, threshold = 6.0 }}
[nodes.pool1]
type = "snn_pool"
inputs = {{ spikes_in = "conv1.spikes_out" }}
params = {{ kernel = 2 }}
"""

EMU = """
[nodes.emu]
type = "loihi_emulator"
inputs = {{ spikes_in = "enc.spikes_out", spikes_in_1 = "conv1.spikes_out", spikes_in_2 = "pool1.spikes_out" }}
params = {{ spec_file = "{spec}", taps = ["enc", "conv1", "pool1"], window_us = 100000, weight_bits = 4 }}
"""


def test_graph_run_matches_the_cli_report(shared, tmp_path):
    """A real graph (replay -> polarity_encoder -> snn_conv -> snn_pool, emulator tapping all three)
    run in-process; the same graph through `spikeflow loihi report` gives the same energy."""
    from spikeflow.service.graph import load_graph
    from spikeflow.service.runtime import run_inline

    data = shared("recordings/slayer-nmnist/5.bs2")
    net = tmp_path / "net.toml"
    net.write_text(NET_GRAPH.format(data=data))
    spec = tmp_path / "spec.toml"
    r = run_cli("spec", str(net), "-o", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    layers = tomllib.loads(spec.read_text())["layers"]
    assert [x["name"] for x in layers] == ["enc", "conv1", "pool1"]
    assert layers[1]["out_shape"] == [8, 34, 34] and layers[2]["out_shape"] == [8, 17, 17]
    full = tmp_path / "full.toml"
    full.write_text(NET_GRAPH.format(data=data) + EMU.format(spec=spec))
    worker = run_inline(load_graph(full), install_signals=False)
    assert worker.exit_code == 0, worker.failures
    st = worker.nodes["emu"].stats()
    assert st["windows"] == 4 and st["late_spikes_dropped"] == 0 and st["n_syn_ops"] > 0
    r = run_cli("report", str(net), "--data", str(data), "--weight-bits", "4", "--repeats", "1",
                "--json", str(tmp_path / "g.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "g.json").read_text())
    assert rep["encoding"] == "graph encoder node 'enc'" and len(rep["inferences"]) == 4
    assert st["energy_uj"] == pytest.approx(sum(x["energy_uj"] for x in rep["inferences"]), rel=1e-9)
    assert st["n_syn_ops"] == sum(x["counts"]["syn_ops"] for x in rep["inferences"])


def test_late_spikes_are_counted_and_auto_timestep_needs_step_us():
    node = emulator(taps=["in"])
    node.process("spikes_in", spikes("in", [0], [0], [0], [0], 0, 4000))          # closes windows 0 and 1
    node.process("spikes_in", spikes("in", [100, 4100], [0, 0], [0, 0], [0, 0], 0, 4200, seq=1))
    assert node.stats()["late_spikes_dropped"] == 1
    auto = LoihiEmulator("emu", build_params(LoihiEmulator, {"layers": TINY}))
    auto.setup({"spikes_in": PortMeta("spikes", SensorSize(4, 4, 1))})
    with pytest.raises(ModelError, match="step_us"):
        auto.process("spikes_in", spikes("in", [0], [0], [0], [0], 0, 10))
    pk = spikes("in", [0, 2500], [0, 0], [0, 0], [0, 0], 0, 3000)
    pk.data.update({"step_us": 500, "t_start_us": 0})
    auto.process("spikes_in", pk)
    d = auto.flush()["metrics_out"][0].data
    assert d["timestep_us"] == 500 and d["timesteps"] == 200                 # 100 ms window of 0.5 ms steps


def test_live_profile_change_applies_to_the_next_window():
    node = emulator(taps=["in"])
    node.process("spikes_in", spikes("in", [0], [1], [1], [0], 0, 2000))
    node.configure(profile="sanafe_loihi", static_mw=2.0)
    out = node.process("spikes_in", spikes("in", [2000], [1], [1], [0], 2000, 4000, seq=1))["metrics_out"]
    assert out[0].data["profile"] == "sanafe_loihi" and out[0].data["static_energy_uj"] > 0
    with pytest.raises(ParamError, match="weight_bits"):
        node.configure(weight_bits=2)
