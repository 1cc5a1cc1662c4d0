"""Benchmark of the Loihi emulator: how much it costs to count and charge real spike traffic.

Workload: N-MNIST samples (../shared/recordings/slayer-nmnist) through the real Kheradpisheh
network (spikeflow.nodes.snn, 2 conv + 2 pool layers, 30 steps), mapped at 2-bit weights.
References measured in the same run (medians over repeats):

- the SNN forward pass itself on this CPU (what the emulator rides along with),
- the naive pure-Python twin of the counting kernel (tests/naive_loihi.py) on a subset.

    .venv/bin/python bench/bench_loihi.py [--samples 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from spikeflow.drivers.recording import read_recording  # noqa: E402
from spikeflow.nodes import loihi_kernels as K  # noqa: E402
from spikeflow.nodes.loihi_costs import load_profile  # noqa: E402
from spikeflow.nodes.loihi_mapping import map_network  # noqa: E402
from spikeflow.nodes.loihi_model import run_traffic  # noqa: E402
from spikeflow.nodes.snn import Network, events_from_times  # noqa: E402
from spikeflow.service.cli_loihi_report import polarity_samples, specs_of  # noqa: E402


def median_s(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rec = ROOT.parent / "shared" / "recordings" / "slayer-nmnist"
    net = Network.kheradpisheh((2, 34, 34))
    profile = load_profile("davies2018")
    mapping = map_network(specs_of(net), 2)
    map_s = median_s(lambda: map_network(specs_of(net), 2), 3)
    samples, traffic = [], []
    for i in range(1, args.samples + 1):
        ev, _ = read_recording(rec / f"{i}.bs2")
        s = polarity_samples(str(i), ev, (2, 34, 34), 30)[0]
        samples.append(s)
        _, t_start, step, T, times = s
        out = net.forward((times, T))
        sp = {"input": events_from_times(times, t_start, step)}
        sp.update({n: events_from_times(t, t_start, step) for n, t in out.times.items()})
        traffic.append((sp, t_start, step, T))
    n_spikes = sum(len(v) for sp, *_ in traffic for v in sp.values())
    n_syn = sum(run_traffic(mapping, profile, sp, st, t, t + T * st)[0].counts["syn_ops"] for sp, t, st, T in traffic)

    def emulate():
        for sp, t, st, T in traffic:
            run_traffic(mapping, profile, sp, st, t, t + T * st)

    def forward():
        for _, _, _, T, times in samples:
            net.forward((times, T))

    emu_s = median_s(emulate, args.repeats)
    fwd_s = median_s(forward, args.repeats)

    # kernel vs naive twin: conv1 fan-out of the first 100 input spikes of the first sample
    import naive_loihi as naive

    sp, t_start, step, T = traffic[0]
    spec = mapping.spec("conv1")
    pl = mapping.placements["conv1"]
    ev = sp["input"][:100]
    st = (ev["t"] - t_start) // step
    c, h, w = spec.in_shape
    nid = ((ev["y"].astype(np.int64) * w + ev["x"]) * c + ev["p"]).astype(np.int64)
    zeros = np.zeros(len(nid), np.int64)
    g = spec.geometry()
    tx, ty = mapping.tile_x[pl.cores], mapping.tile_y[pl.cores]

    def fast():
        a = np.zeros((T, pl.n_cores), np.int64)
        K.count_traffic_(st, 0, nid, zeros, zeros, g, pl.bounds, tx, ty, 4.1, 6.5, 2.1,
                         np.full(spec.n_neurons, -1, np.int64), a, a.copy(), a.copy(), np.zeros(len(nid), np.int64),
                         np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T))

    def slow():
        naive.count_traffic(st, 0, nid, zeros, zeros, g, pl.bounds, tx, ty, 4.1, 6.5, 2.1, T)

    k_s = median_s(fast, args.repeats)
    t0 = time.perf_counter()
    slow()
    n_s = time.perf_counter() - t0  # once: it is slow
    rows = [
        ("network", "Kheradpisheh 2-conv (30/100 maps), 34x34, 30 steps, 2-bit weights"),
        ("mapping (cores, chips)", f"{mapping.n_cores} cores, {mapping.chips} chip(s); mapping takes {map_s * 1e3:.0f} ms (once per graph)"),
        ("samples", f"{args.samples} N-MNIST, {n_spikes:,} spikes, {n_syn:,} synaptic ops"),
        ("emulator: count + charge", f"{emu_s / args.samples * 1e3:.2f} ms/sample, "
                                     f"{n_syn / emu_s / 1e6:.1f} M syn ops/s, {n_spikes / emu_s / 1e6:.2f} M spikes/s"),
        ("reference: SNN forward (CPU)", f"{fwd_s / args.samples * 1e3:.2f} ms/sample"),
        ("ratio emulator / forward", f"{emu_s / fwd_s:.2f}x"),
        ("count kernel, 100 spikes", f"{k_s * 1e6:.0f} us"),
        ("reference: naive Python twin", f"{n_s * 1e3:.0f} ms"),
        ("ratio naive / kernel", f"{n_s / k_s:,.0f}x"),
    ]
    print("| figure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
