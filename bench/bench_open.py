"""Fixed cost of opening a recording (format detection, header, sidecar, reader set-up) next to
the whole read of the fastest reference on the same file, for the small-file formats where it
shows: AEDAT 2.0 (MNIST-DVS sample) and tonic ``.npy``.

    .venv/bin/python bench/bench_open.py --repeats 25

Like ``bench_decode.py`` every timed call follows ``gc.collect()`` (cold caches), interleaved
ours/reference in one process pinned to one core; medians in microseconds.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from pathlib import Path

REC = Path(__file__).resolve().parents[2] / "shared" / "recordings"
CASES = [  # format, file, options, reference name
    ("aedat2", "mnist-dvs/mnist_0_scale04_0001.aedat", {}, "tonic"),
    ("tonic_npy", "expelliarmus-samples/evt3_sample.npy", {"sensor_size": [1280, 720]}, "numpy"),
]


def _reference(name: str, path: str):
    import numpy as np
    if name == "numpy":
        return lambda: np.load(path)
    import tonic.io as tio

    def tonic_aedat2():  # what bench_decode.py times: header, then raw address words
        v, start, _ = tio.read_aedat_header_from_file(path)
        return tio.get_aer_events_from_file(path, v, start)
    return tonic_aedat2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=25)
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    from spikeflow.drivers.recording import (
        detect_format,
        open_recording,
        read_recording,
    )
    print("| format | file | detect | open (format given) | open (sniffed) | read_recording | reference read | ours / ref |")
    print("|---|---|---|---|---|---|---|---|")
    for fmt, rel, opts, ref in CASES:
        path = str(REC / rel)
        steps = {
            "detect": lambda p=path: detect_format(p),
            "open": lambda p=path, f=fmt, o=opts: open_recording(p, f, **o).close(),
            "sniffed": lambda p=path, o=opts: open_recording(p, **o).close(),
            "read": lambda p=path, f=fmt, o=opts: read_recording(p, f, **o),
            "ref": _reference(ref, path),
        }
        times: dict[str, list[float]] = {k: [] for k in steps}
        for fn in steps.values():
            fn()  # warm-up: imports, numba cache, page cache
        for _ in range(args.repeats):
            for k, fn in steps.items():
                gc.collect()
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        us = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        print(f"| {fmt} | {rel} | {us['detect']:.0f} us | {us['open']:.0f} us | {us['sniffed']:.0f} us | "
              f"{us['read']:.0f} us | {ref} {us['ref']:.0f} us | {us['ref'] / us['read']:.2f} |")
    print(f"\nload average {os.getloadavg()[0]:.2f}; ours / ref = reference time / our read time (>= 1: ours faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
