"""Spiking core throughput on the DVS128 Gesture clips: M input events/s and real-time factor.

    .venv/bin/python bench/bench_snn.py                 # print the table
    .venv/bin/python bench/bench_snn.py --write-docs    # also update docs/benchmarks.md (## Spiking core)

Pipeline per window: polarity encoding (128x128x2, first event per pixel, T steps) -> conv1
(30 maps 5x5, pad 2) -> first-spike pool 2x2 -> conv2 (100 maps 5x5, pad 2) -> pool 2x2, with
pointwise inhibition; learning adds k-WTA + STDP on both conv layers after each window. Modes:
event-driven kernels on sparse samples (as the nodes chain them) vs dense kernels on spike-time
maps, learning off vs on, the same network as graph nodes fed 10 ms events packets (``nodes``:
adds windowing and packet <-> sparse-sample conversions), and the naive numpy twins
(tests/naive.py) as the reference, all in the same run. Times are single-thread CPU time (``time.process_time``:
the machine is shared, so wall time is also printed) - medians over repeats. Real-time factor =
recording time covered by the processed windows / processing time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # naive.py: the reference twins

from spikeflow.nodes.snn import NO_SPIKE, Network, Stdp  # noqa: E402
from spikeflow.nodes.snn_kernels import sparse_from_fields  # noqa: E402
from spikeflow.service.events import as_events, time_slice  # noqa: E402

CLIPS = REPO / ".." / "shared" / "recordings" / "slayer-dvsgesture"
LOAD = os.getloadavg()  # the machine is shared: the docs note the load around the run


def load_clip(path: Path) -> np.ndarray:
    """Our reader when available, else tonic's reference decoder (same bits, see MANIFEST)."""
    try:
        from spikeflow.drivers.recording import read_recording

        ev, _ = read_recording(path, format="nmnist_bin", sensor_size=(128, 128, 2))
        return ev
    except Exception as e:  # noqa: BLE001 - the reader is another engineer's work in progress
        import tonic.io

        print(f"# read_recording failed on {path.name} ({e}); using tonic.io.read_mnist_file", file=sys.stderr)
        dt = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
        return as_events(tonic.io.read_mnist_file(str(path), dtype=dt))


def windows(events: np.ndarray, window_us: int) -> list[tuple[int, np.ndarray]]:
    """(window start, events) for consecutive windows from t = 0."""
    t_end = int(events["t"][-1]) + 1
    return [(ws, time_slice(events, ws, ws + window_us)) for ws in range(0, t_end, window_us)]


def build(args) -> Network:
    return Network.kheradpisheh((2, 128, 128), time_steps=args.time_steps, conv1=30, conv2=100, threshold1=args.threshold1,
                                threshold2=args.threshold2, stdp1=Stdp(k=5, radius=2), stdp2=Stdp(k=8, radius=1))


def run_fast(net: Network, wins, args, learn: bool, path: str) -> None:
    T = args.time_steps
    step = -(-args.window_us // T)
    for layer in net.conv_layers:
        layer.path = path
    c1, p1, c2, p2 = net.layers
    first = np.full(2 * 128 * 128, NO_SPIKE, dtype=np.int32)
    for ws, ev in wins:
        # polarity coding straight to a sparse sample, then the layer chain as the snn_conv /
        # snn_pool nodes run it (sparse samples between layers, outputs dropped after use); both
        # conv layers learn live, in streaming order, when learning is on. path = "dense" goes
        # through the dense kernels on spike-time maps.
        sample = sparse_from_fields(ev["t"], ev["p"], ev["y"], ev["x"], ws, step, 1, 2, 128, 128, T, first)
        o, st, _ = c1.forward_sparse(*sample, (128, 128), T, learn=learn)
        o, st = p1.forward_sparse(o, st, (30, 128, 128), T)
        o, st, _ = c2.forward_sparse(o, st, (64, 64), T, learn=learn)
        p2.forward_sparse(o, st, (100, 64, 64), T)


def build_nodes(args, learn: bool):
    """The same network as graph nodes: polarity_encoder -> snn_conv -> snn_pool -> snn_conv -> snn_pool."""
    from spikeflow.nodes.base import PortMeta, build_params
    from spikeflow.nodes.encoders import PolarityEncoder
    from spikeflow.nodes.snn import FirstSpikePoolNode, SpikingConvNode
    from spikeflow.service.events import SensorSize

    specs = [(PolarityEncoder, "events_in", {"window_us": args.window_us, "time_steps": args.time_steps}),
             (SpikingConvNode, "spikes_in", {"out_channels": 30, "kernel": 5, "padding": 2, "threshold": args.threshold1,
                                             "learn": learn, "k_winners": 5, "inhibition_radius": 2, "path": "event"}),
             (FirstSpikePoolNode, "spikes_in", {"kernel": 2}),
             (SpikingConvNode, "spikes_in", {"out_channels": 100, "kernel": 5, "padding": 2, "threshold": args.threshold2,
                                             "learn": learn, "k_winners": 8, "inhibition_radius": 1, "path": "event",
                                             "seed": 1}),
             (FirstSpikePoolNode, "spikes_in", {"kernel": 2})]
    meta = PortMeta("events", SensorSize(128, 128, 2))
    nodes = []
    for i, (cls, port, params) in enumerate(specs):
        node = cls(f"n{i}", build_params(cls, params))
        meta = next(iter(node.setup({port: meta}).values()))
        nodes.append((node, port))
    return nodes


def run_nodes(nodes, packets) -> None:
    for pk in packets:
        batch = [pk]
        for node, port in nodes:
            batch = [o for b in batch for o in node.process(port, b).get(next(iter(node.outputs)), [])]
    for node, port in nodes:
        node.flush()


def clip_packets(clips_events, chunk_us: int = 10_000):
    """Every clip as 10 ms events packets (what a replay source emits), clips one after another."""
    from spikeflow.service.packet import Packet
    from spikeflow.service.events import SensorSize

    out, offset = [], 0
    for ev in clips_events:
        ev = ev.copy()
        ev["t"] += offset
        t_end = int(ev["t"][-1]) + 1
        for t0 in range(offset, t_end, chunk_us):
            out.append(Packet(kind="events", stream="src.events_out", seq=len(out), sensor_size=SensorSize(128, 128, 2),
                              t0_us=t0, t1_us=min(t0 + chunk_us, t_end), events=time_slice(ev, t0, t0 + chunk_us)))
        offset = (t_end // 1_000_000 + 1) * 1_000_000
    return out


def run_naive(net: Network, wins, args, learn: bool) -> None:
    import naive

    T = args.time_steps
    step = -(-args.window_us // T)
    c1, p1, c2, _ = net.layers
    for ws, ev in wins:
        t = naive.times_from_events(ev["p"], ev["y"], ev["x"], (ev["t"] - ws) // step, 2, 128, 128, T)
        x = t
        for conv, pool in ((c1, p1), (c2, net.layers[3])):
            t_out, v1, _ = naive.conv(x, conv.weights, conv.thresholds(), conv.stride, conv.padding, T)
            t_out, v1 = naive.pointwise_inhibition(t_out, v1)
            if learn:
                winners = naive.k_winners(t_out, v1, conv.stdp.k, conv.stdp.radius)
                conv.weights = naive.stdp(conv.weights, x, winners, t_out, conv.a_plus, conv.a_minus, conv.stride,
                                          conv.padding)
            x = naive.pool(t_out, pool.kernel, pool.stride, pool.padding, T)


def measure(fn, repeats: int) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window-us", type=int, default=50_000)
    ap.add_argument("--time-steps", type=int, default=30)
    ap.add_argument("--threshold1", type=float, default=15.0)
    ap.add_argument("--threshold2", type=float, default=15.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-windows", type=int, default=6, help="windows for the dense kernels (slow)")
    ap.add_argument("--naive-windows", type=int, default=1, help="windows for the numpy twins (very slow)")
    ap.add_argument("--write-docs", action="store_true", help="replace '## Spiking core' in docs/benchmarks.md")
    args = ap.parse_args(argv)

    clips = sorted(CLIPS.glob("*.bs2"), key=lambda p: int(p.stem))
    if not clips:
        print(f"no clips in {CLIPS}", file=sys.stderr)
        return 1
    all_wins, clip_events = [], []
    for p in clips:
        clip_events.append(load_clip(p))
        all_wins += windows(clip_events[-1], args.window_us)
    packets = clip_packets(clip_events)
    busy = [w for w in all_wins if len(w[1])]
    stride = max(1, len(busy) // max(args.dense_windows, 1))
    dense_wins = busy[::stride][:args.dense_windows]
    naive_wins = dense_wins[:args.naive_windows]

    warm = build(args)
    for path in ("event", "dense"):
        run_fast(warm, busy[:1], args, True, path)  # numba cache load / compile outside the timing
    run_fast(build(args), busy, args, False, "event")  # one untimed pass: page cache, CPU caches, allocator

    rows = []
    stats = {}

    def row(label, path, wins, learn, fn, repeats):
        n_ev = sum(len(w[1]) for w in wins)
        cpu, wall = measure(fn, repeats)
        covered_s = len(wins) * args.window_us * 1e-6
        rows.append({"mode": label, "path": path, "windows": len(wins), "events": n_ev, "cpu_s": cpu, "wall_s": wall,
                     "mev_s": n_ev / cpu / 1e6, "rtf": covered_s / cpu, "rtf_wall": covered_s / wall, "learn": learn})
        print(f"{label:10s} {path:6s} {len(wins):4d} win {n_ev:9d} ev  cpu {cpu:8.3f} s  wall {wall:8.3f} s  "
              f"{n_ev / cpu / 1e6:7.3f} Mev/s  x{covered_s / cpu:7.2f} real time", flush=True)

    for learn in (False, True):
        label = "learning" if learn else "inference"
        net = build(args)
        row(label, "event", busy, learn, lambda: run_fast(net, busy, args, learn, "event"), args.repeats)
        stats[label] = {layer.name: layer.stats() for layer in net.layers}
        nodes_holder = {}

        def node_run(learn=learn):
            nodes_holder["n"] = build_nodes(args, learn)
            run_nodes(nodes_holder["n"], packets)
        row(label, "nodes", busy, learn, node_run, args.repeats)
        net = build(args)
        row(label, "dense", dense_wins, learn, lambda: run_fast(net, dense_wins, args, learn, "dense"),
            max(1, args.repeats - 1))
        net = build(args)
        row(label, "naive", naive_wins, learn, lambda: run_naive(net, naive_wins, args, learn), 1)

    naive_rate = {r["learn"]: r["rtf"] for r in rows if r["path"] == "naive"}
    dense_rate = {r["learn"]: r["rtf"] for r in rows if r["path"] == "dense"}
    lines = ["| mode | kernels | windows | input events | CPU s (median) | M events/s | × real time (CPU) "
             "| × real time (wall) | vs dense | vs naive numpy |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['path']} | {r['windows']} | {r['events']:,} | {r['cpu_s']:.3f} | "
                     f"{r['mev_s']:.3g} | {r['rtf']:.3g} | {r['rtf_wall']:.3g} | "
                     f"{r['rtf'] / dense_rate[r['learn']]:.1f}× | {r['rtf'] / naive_rate[r['learn']]:.0f}× |")
    activity = []
    for label, st in stats.items():
        per_win = {k: v["spikes_out"] / max(v["samples"], 1) for k, v in st.items()}
        spikes_in = st["conv1"]["spikes_in"] / max(st["conv1"]["samples"], 1)
        extra = (f"; convergence C after learning: conv1 {st['conv1']['convergence']:.4f}, conv2 "
                 f"{st['conv2']['convergence']:.4f}") if label == "learning" else ""
        activity.append(f"Mean activity per {args.window_us // 1000} ms window ({label}, event path): {spikes_in:.0f} "
                        "input spikes, " + ", ".join(f"{k} {v:.0f}" for k, v in per_win.items()) + f" output spikes{extra}.")
    activity = "\n".join(f"- {a}" for a in activity)
    table = "\n".join(lines)
    print()
    print(table)
    print(activity)
    c1 = stats["inference"]["conv1"]
    in_per_win = c1["spikes_in"] / max(c1["samples"], 1)
    rtf = {(r["learn"], r["path"]): r["rtf"] for r in rows}
    goals = (f"Goals (issue 3, one core, CPU time): inference ≥ 20× real time — "
             f"**{'met' if rtf[False, 'event'] >= 20 else 'not met'}** by the layer chain ({rtf[False, 'event']:.1f}×), "
             f"**{'met' if rtf[False, 'nodes'] >= 20 else 'not met'}** through the graph nodes ({rtf[False, 'nodes']:.1f}×); "
             f"learning ≥ 5× — **{'met' if min(rtf[True, 'event'], rtf[True, 'nodes']) >= 5 else 'not met'}** "
             f"({rtf[True, 'event']:.1f}× / {rtf[True, 'nodes']:.1f}×). "
             f"The event-driven kernels are {min(r['rtf'] / dense_rate[r['learn']] for r in rows if r['path'] == 'event'):.0f}× "
             f"faster than the dense ones at this activity (~{100 * in_per_win / (2 * 128 * 128):.0f}% of the inputs spike per window). "
             "Layers pass sparse samples (spikes sorted by step), never dense maps, and reuse their workspaces; the "
             "conv kernel only records a position's inputs until an upper bound (Σ of the largest weight per tap) "
             "passes the lowest threshold, so of the up to "
             f"{in_per_win * 30 * 25 / 1e6:.1f} M synaptic updates per window into conv1's 30 maps only the positions "
             "that may fire pay them (same additions in the same order: spike times and potentials are bit-identical). "
             "What remains is mostly that per-input bookkeeping in conv1 and the row updates of the positions that fire.")
    print(goals)
    if args.write_docs:
        write_docs(args, table, activity + "\n\n" + goals, len(clips), len(busy))
    return 0


def write_docs(args, table: str, activity: str, n_clips: int, n_windows: int) -> None:
    doc = REPO / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    cmd = (f"python bench/bench_snn.py --window-us {args.window_us} --time-steps {args.time_steps} "
           f"--threshold1 {args.threshold1:g} --threshold2 {args.threshold2:g} --repeats {args.repeats} "
           f"--dense-windows {args.dense_windows} --naive-windows {args.naive_windows} --write-docs")
    section = f"""## Spiking core

Command: `{cmd}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, shared 2-core machine, load average
{LOAD[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end of the run, numba single thread).

Input: the {n_clips} DVS128 Gesture clips in `../shared/recordings/slayer-dvsgesture` (128×128, 1.45 s each),
{n_windows} windows of {args.window_us // 1000} ms, polarity-coded into T = {args.time_steps} steps. Network: conv1 30 maps 5×5
(θ = {args.threshold1:g}) → pool 2×2 → conv2 100 maps 5×5 (θ = {args.threshold2:g}) → pool 2×2, pointwise inhibition on;
learning = k-WTA (k = 5 / 8, r = 2 / 1) + STDP on both conv layers after every window. `event` rows
polarity-code pre-cut windows straight into sparse samples and run the layer chain on them as the nodes do
(`forward_sparse`); `dense` rows run the same chain through the dense kernels on spike-time maps; `nodes` runs
the same network as graph nodes (`polarity_encoder` → `snn_conv` → `snn_pool` → `snn_conv` → `snn_pool`) on
10 ms events packets, including windowing and the packet ↔ sparse-sample conversions. Dense and naive rows
run on a spread subset of the windows (the rates are per covered recording time, so rows compare directly).
CPU time is the process's own single-core time; wall time includes waiting for the shared cores.

{table}

{activity}
"""
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.strip() == "## Spiking core"), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        text = "".join(lines[:start]) + section + ("\n" if end < len(lines) else "") + "".join(lines[end:])
    doc.write_text(text)
    print(f"updated {doc}")


if __name__ == "__main__":
    sys.exit(main())
