"""Event filter kernels on real DVS128 Gesture clips: ns per event, against the mask kernels
(filter to a boolean mask, then ``np.compress``) and tonic's ``Denoise`` on the same events.

    .venv/bin/python bench/bench_filters.py [--repeats 9] [--clips 10]

One process pinned to one core; the clips are ``../shared/recordings/slayer-dvsgesture/*.bs2``
decoded once, the per-pixel state reset before each run; medians over ``--repeats`` runs of
all clips. tonic's ``Denoise`` (a Python loop) runs on the first clip only, once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

REC = Path(__file__).resolve().parents[2] / "shared" / "recordings" / "slayer-dvsgesture"


def _time(fn, clips, repeats) -> float:
    """Median seconds of ``fn(ev)`` over all clips, per run."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for ev in clips:
            fn(ev)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--clips", type=int, default=10)
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    from spikeflow.drivers.recording import read_recording
    from spikeflow.nodes import filter_kernels as F
    from spikeflow.service.events import EVENT_DTYPE

    files = sorted(REC.glob("*.bs2"))[:args.clips]
    if not files:
        print(f"no clips under {REC}")
        return 1
    clips = [read_recording(p, dataset="dvsgesture")[0] for p in files]
    n = sum(map(len, clips))

    def fused_noise(ev, window=5000, radius=1, eight=True):
        last = np.full((128, 128), F.NEVER_US, np.int64)
        out = np.empty(len(ev), EVENT_DTYPE)
        k, _ = F.background_activity_compact_(last, ev, window, radius, eight, out)
        return out[:k]

    def mask_noise(ev, window=5000, radius=1, eight=True):
        last = np.full((128, 128), F.NEVER_US, np.int64)
        keep = np.empty(len(ev), bool)
        F.background_activity_(last, ev["x"], ev["y"], ev["t"], window, radius, eight, keep)
        return np.compress(keep, ev)

    def fused_refractory(ev, refr=1000):
        last = np.full((128, 128), F.NEVER_US, np.int64)
        out = np.empty(len(ev), EVENT_DTYPE)
        k, _ = F.refractory_compact_(last, ev, refr, out)
        return ev if k == len(ev) else out[:k]   # (nothing copied when nothing is dropped)

    def mask_refractory(ev, refr=1000):
        last = np.full((128, 128), F.NEVER_US, np.int64)
        keep = np.empty(len(ev), bool)
        F.refractory_(last, ev["x"], ev["y"], ev["t"], refr, keep)
        return np.compress(keep, ev)

    cases = [
        ("noise_filter, 8 neighbours, 5 ms", fused_noise, mask_noise, {}),
        ("noise_filter, 4 neighbours (tonic's Denoise), 5 ms", fused_noise, mask_noise, {"eight": False}),
        ("noise_filter, radius 2, 5 ms", fused_noise, mask_noise, {"radius": 2}),
        ("refractory_filter, 1 ms", fused_refractory, mask_refractory, {}),
        ("refractory_filter, 0 ms (keeps everything: nothing copied)", fused_refractory, mask_refractory,
         {"refr": 0}),
    ]
    print(f"{len(clips)} clips, {n:,} events; medians of {args.repeats} runs, ns per event, one core\n")
    print("| filter | ours (fused kernel) | mask kernel + np.compress | ratio | events kept |")
    print("|---|---:|---:|---:|---:|")
    for name, fused, mask, kw in cases:
        for ev in clips[:1]:  # compile / load caches, and check both keep the same events
            assert fused(ev, **kw).tobytes() == mask(ev, **kw).tobytes(), name
        kept = sum(len(fused(ev, **kw)) for ev in clips)
        a = _time(lambda ev, f=fused, k=kw: f(ev, **k), clips, args.repeats) / n * 1e9
        b = _time(lambda ev, f=mask, k=kw: f(ev, **k), clips, args.repeats) / n * 1e9
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f}x | {kept / n:.1%} |")

    import tonic.transforms as T
    ev = clips[0]
    tev = np.zeros(len(ev), dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    for k in "xytp":
        tev[k] = ev[k]
    t0 = time.perf_counter()
    got = T.Denoise(filter_time=5000)(tev)
    tonic_ns = (time.perf_counter() - t0) / len(ev) * 1e9
    ours_ns = _time(lambda e: fused_noise(e, eight=False), [ev], args.repeats) / len(ev) * 1e9
    print(f"\ntonic.transforms.Denoise(filter_time=5000) on {files[0].name} ({len(ev):,} events): "
          f"{tonic_ns:.0f} ns per event, kept {len(got):,}; ours with neighbourhood 4: {ours_ns:.2f} ns per event "
          f"({tonic_ns / ours_ns:.0f}x). (The same events past tonic's start-up artefact, which treats every "
          f"pixel as having fired at t = 0: tests/test_filters.py checks it.)")
    print(f"\nload average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
