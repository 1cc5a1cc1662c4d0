"""Replay pacing and throughput on a real recording, against a plain sleep loop in the same run.

    .venv/bin/python bench/bench_replay.py [--repeats 5] [--file PATH]

Figures (medians over repeats):
- pacing: lateness of each 1 ms packet against its schedule (p50/p99, µs) at 1× and 10×, and
  the CPU the pacing costs (process CPU time / wall time), for ``spikeflow.drivers.replay`` and
  for the reference: ``time.sleep(deadline - now)`` per window over the same windows;
- throughput as fast as possible (M events/s): replay of the in-memory array, and streamed
  from an ``.sfe`` file (decode included), against the reference loop slicing the same windows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / ".." / "shared" / "recordings" / "slayer-dvsgesture" / "4.bs2"


def load(path: Path):
    """Decode with our reader if it exists yet, else with tonic (the reference decoder)."""
    from spikeflow.service.events import as_events

    try:
        from spikeflow.drivers.recording import read_recording

        ev, _ = read_recording(path, format="nmnist_bin", sensor_size=(128, 128, 2))
        return ev, "spikeflow nmnist_bin reader"
    except Exception:  # noqa: BLE001 - the reader may still be in development
        from tonic.io import read_mnist_file

        raw = read_mnist_file(str(path), dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
        return as_events(raw), "tonic.io.read_mnist_file"


def reference_paced(ev, window_us: int, speed: float):
    """The plain approach: precomputed windows, sleep until each deadline."""
    from spikeflow.service.events import window_bounds

    wb = window_bounds(ev, window_us)
    edges, idx = wb[:, 0], wb[:, 1]
    late = np.empty(len(edges) - 1)
    t_first = int(edges[0])
    c0, start = time.process_time(), time.monotonic_ns()
    n = 0
    for k in range(len(edges) - 1):
        deadline = start + (int(edges[k + 1]) - t_first) * 1000 / speed
        now = time.monotonic_ns()
        if deadline > now:
            time.sleep((deadline - now) / 1e9)
        late[k] = time.monotonic_ns() - deadline
        n += len(ev[idx[k]:idx[k + 1]])
    wall = (time.monotonic_ns() - start) / 1e9
    return late / 1000.0, (time.process_time() - c0) / wall


def ours_paced(ev, window_us: int, speed: float):
    from spikeflow.drivers.replay import Replay

    r = Replay(ev, sensor_size=(128, 128, 2), window_us=window_us, speed=speed)
    c0, w0 = time.process_time(), time.monotonic()
    for _ in r:
        pass
    wall = time.monotonic() - w0
    return np.asarray(r.late_ns) / 1000.0, (time.process_time() - c0) / wall


def reference_fast(ev, window_us: int) -> float:
    from spikeflow.service.events import window_bounds

    t0 = time.perf_counter()
    wb = window_bounds(ev, window_us)
    idx = wb[:, 1]
    n = 0
    for k in range(len(idx) - 1):
        n += len(ev[idx[k]:idx[k + 1]])
    return n / (time.perf_counter() - t0) / 1e6


def reference_fast_packets(ev, window_us: int) -> float:
    """The same loop, also building one Packet per window (what any source must do)."""
    from spikeflow.service.events import window_bounds
    from spikeflow.service.packet import Packet

    t0 = time.perf_counter()
    wb = window_bounds(ev, window_us)
    edges, idx = wb[:, 0].tolist(), wb[:, 1].tolist()
    n = 0
    for k in range(len(idx) - 1):
        p = Packet("events", "ref", k, (128, 128, 2), edges[k], edges[k + 1], time.time_ns(), ev[idx[k]:idx[k + 1]])
        n += p.count
    return n / (time.perf_counter() - t0) / 1e6


def ours_fast(source, window_us: int, count=None) -> float:
    from spikeflow.drivers.replay import replay

    t0 = time.perf_counter()
    n = sum(p.count for p in replay(source, sensor_size=(128, 128, 2), window_us=window_us, count=count, speed=0))
    return n / (time.perf_counter() - t0) / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--file", type=Path, default=REAL)
    ap.add_argument("--window-us", type=int, default=1000)
    args = ap.parse_args(argv)
    if not args.file.exists():
        print(f"missing {args.file} (../shared absent?)", file=sys.stderr)
        return 1
    ev, decoder = load(args.file)
    span_s = (ev["t"][-1] - ev["t"][0]) * 1e-6
    print(f"{args.file.name}: {len(ev)} events, {span_s:.3f} s, decoded by {decoder}; "
          f"{args.window_us} µs windows, {args.repeats} repeats (medians)")
    rows = []
    for speed in (1.0, 10.0):
        ours, ref = [], []
        for _ in range(args.repeats):
            ours.append(ours_paced(ev, args.window_us, speed))
            ref.append(reference_paced(ev, args.window_us, speed))
        med = lambda runs, q: statistics.median(float(np.percentile(l, q)) for l, _ in runs)  # noqa: E731
        cpu = lambda runs: statistics.median(c for _, c in runs)  # noqa: E731
        rows.append((f"{speed:g}×", med(ours, 50), med(ours, 99), cpu(ours), med(ref, 50), med(ref, 99), cpu(ref)))
    print("\n| speed | replay p50 late (µs) | replay p99 late (µs) | replay CPU | sleep-loop p50 (µs) "
          "| sleep-loop p99 (µs) | sleep-loop CPU | p99 ratio (loop/replay) |")
    print("|---|---|---|---|---|---|---|---|")
    for sp, p50, p99, c, r50, r99, rc in rows:
        print(f"| {sp} | {p50:.0f} | {p99:.0f} | {c:.0%} | {r50:.0f} | {r99:.0f} | {rc:.0%} | {r99 / p99:.2f} |")
    from spikeflow.drivers.recording import open_writer

    with tempfile.TemporaryDirectory() as tmp:
        sfe = Path(tmp) / "clip.sfe"
        with open_writer(sfe, (128, 128, 2)) as w:
            w.write(ev)
        fast_ref = statistics.median(reference_fast(ev, args.window_us) for _ in range(args.repeats))
        fast_refp = statistics.median(reference_fast_packets(ev, args.window_us) for _ in range(args.repeats))
        fast_arr = statistics.median(ours_fast(ev, args.window_us) for _ in range(args.repeats))
        fast_file = statistics.median(ours_fast(sfe, args.window_us) for _ in range(args.repeats))
        fast_cnt = statistics.median(ours_fast(ev, args.window_us, count=10_000) for _ in range(args.repeats))
    ev_per_win = len(ev) / (span_s * 1e6 / args.window_us)
    print(f"\n| as fast as possible ({ev_per_win:.0f} events per {args.window_us} µs window) | M events/s "
          f"| k packets/s | × real time | ratio to loop + Packet |")
    print("|---|---|---|---|---|")
    for name, v in (("reference: slicing loop, no packets", fast_ref),
                    ("reference: slicing loop + Packet objects", fast_refp),
                    (f"replay(array), {args.window_us} µs windows", fast_arr),
                    (f"replay(.sfe path, streamed + decoded), {args.window_us} µs windows", fast_file)):
        print(f"| {name} | {v:.1f} | {v * 1e3 / ev_per_win:.0f} | {v * 1e6 / (len(ev) / span_s):.0f} "
              f"| {v / fast_refp:.2f} |")
    print(f"| replay(array), count=10000 | {fast_cnt:.1f} | {fast_cnt * 0.1:.1f} | "
          f"{fast_cnt * 1e6 / (len(ev) / span_s):.0f} | {fast_cnt / fast_refp:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
