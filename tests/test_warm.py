"""Nodes load their numba kernels in setup, not on the stream's first packets.

The check is on types, not time: in a fresh interpreter, after setup, a stream of writable and
read-only packets (as an in-process chain and a socket deliver them) that reaches every path
(sparse and dense windows, learning on and off) must not make numba load or compile a single
new kernel version. Before this, the first packet through snn_conv in a fresh worker took
0.35-0.41 s (numba's own start plus loading the kernels)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from spikeflow.nodes.base import PortMeta
from spikeflow.nodes.encoders import PolarityEncoder
from spikeflow.nodes.snn import SpikingConvNode
from spikeflow.nodes.warm import every_pixel, read_only
from spikeflow.service.events import EVENT_DTYPE, SensorSize
from spikeflow.service.packet import Packet

FRESH_PROCESS = r"""
import json, sys
import numpy as np
from numba.core.registry import CPUDispatcher
from spikeflow.nodes.base import PortMeta, build_params
from spikeflow.nodes.encoders import DogEncoder, PolarityEncoder
from spikeflow.nodes.loihi import LoihiEmulator
from spikeflow.nodes.snn import FirstSpikePoolNode, SpikingConvNode
from spikeflow.nodes.warm import every_pixel, read_only
from spikeflow.service.events import EVENT_DTYPE, SensorSize
from spikeflow.service.packet import Packet


def versions():
    out = {}
    for name, mod in list(sys.modules.items()):
        if name.startswith("spikeflow.nodes"):
            for attr, f in vars(mod).items():
                if isinstance(f, CPUDispatcher):
                    out[f"{name}.{attr}"] = [str(s) for s in f.signatures]
    return out


size = SensorSize(64, 64, 2)
chain = [PolarityEncoder("enc", PolarityEncoder.Params(window_us=10_000, time_steps=8)),
         SpikingConvNode("c_event", SpikingConvNode.Params(out_channels=4, kernel=3, padding=1, threshold=2.0)),
         SpikingConvNode("c_learn", SpikingConvNode.Params(out_channels=4, kernel=3, padding=1, threshold=2.0, learn=True)),
         FirstSpikePoolNode("pool", FirstSpikePoolNode.Params(kernel=2))]
dog = DogEncoder("dog", DogEncoder.Params(window_us=10_000, time_steps=8))
dog.setup({"events_in": PortMeta("events", size)})
spikes = chain[0].setup({"events_in": PortMeta("events", size)})["spikes_out"]
chain[1].setup({"spikes_in": spikes})
conv = chain[2].setup({"spikes_in": spikes})["spikes_out"]
chain[3].setup({"spikes_in": conv})
emu = LoihiEmulator("emu", build_params(LoihiEmulator, {"layers": [n.describe() for n in (chain[0], chain[2], chain[3])],
                                                        "window_us": 20_000}, key="emu"))
emu.setup({"spikes_in": spikes})
before = versions()

rng = np.random.default_rng(0)
def window(k, dense):
    ev = every_pixel((2, 64, 64), k * 10_000 + 5) if dense else np.zeros(300, EVENT_DTYPE)
    if not dense:
        ev["x"], ev["y"], ev["p"] = rng.integers(0, 64, 300), rng.integers(0, 64, 300), rng.integers(0, 2, 300)
        ev["t"] = np.sort(rng.integers(k * 10_000, (k + 1) * 10_000, 300))
    return Packet("events", "src", k, size, k * 10_000, (k + 1) * 10_000, 0, ev)

emitted = 0
for k in range(6):
    pkt = window(k, dense=k in (2, 3))
    pkt = read_only(pkt) if k % 2 else pkt
    dog.process("events_in", pkt)
    for spk in chain[0].process("events_in", pkt).get("spikes_out", []):
        for s in (spk, read_only(spk)):
            chain[1].process("spikes_in", s)
            emu.process("spikes_in", s)
            for c in chain[2].process("spikes_in", s)["spikes_out"]:
                emu.process("spikes_in", c)
                for q in chain[3].process("spikes_in", c)["spikes_out"]:
                    emitted += len(emu.process("spikes_in", q).get("metrics_out", [])) + 1
emitted += len(emu.flush().get("metrics_out", []))
after = versions()
print(json.dumps({"emitted": emitted, "new": {k: v for k, v in after.items() if v != before.get(k)}}))
"""


def test_setup_loads_every_kernel_the_stream_uses():
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["emitted"] >= 12  # windows went through every node (sparse and dense, both array kinds),
    # and the emulator charged some (metrics packets)
    assert got["new"] == {}, f"kernels first loaded mid-stream: {got['new']}"


def test_warm_up_leaves_the_node_as_setup_built_it(monkeypatch):
    """The probes (STDP included) run through a copy: weights, thresholds, counters and sequence
    numbers are those of the same node built without the warm-up."""
    import spikeflow.nodes.encoders as encoders
    import spikeflow.nodes.snn as snn

    def build():
        enc = PolarityEncoder("enc", PolarityEncoder.Params(window_us=1000, time_steps=4))
        spikes = enc.setup({"events_in": PortMeta("events", SensorSize(32, 32, 2))})["spikes_out"]
        conv = SpikingConvNode("c", SpikingConvNode.Params(out_channels=3, kernel=3, padding=1, threshold=1.0,
                                                           learn=True, homeostasis_plus=0.5, seed=4))
        conv.setup({"spikes_in": spikes})
        return enc, conv

    enc, conv = build()
    with monkeypatch.context() as m:
        m.setattr(snn, "warm_kernels", lambda *a: None)
        m.setattr(encoders, "warm_kernels", lambda *a: None)
        enc0, conv0 = build()
    assert enc.counters == enc0.counters and enc._seq == enc0._seq == 0
    assert conv.stats() == conv0.stats() and conv._seq == conv0._seq == 0
    for k, v in conv0.state().items():
        np.testing.assert_array_equal(conv.state()[k], v, err_msg=k)


def test_probe_helpers():
    ev = every_pixel((2, 3, 4), t_us=7)
    assert len(ev) == 24 and ev.dtype == EVENT_DTYPE and set(ev["t"]) == {7}
    assert {(int(e["p"]), int(e["y"]), int(e["x"])) for e in ev} == {(p, y, x) for p in range(2) for y in range(3)
                                                                       for x in range(4)}
    pkt = Packet("events", "s", 0, SensorSize(4, 3, 2), 0, 10, 0, ev)
    ro = read_only(pkt)
    assert not ro.events.flags.writeable and pkt.events.flags.writeable
    np.testing.assert_array_equal(ro.events, ev)
